"""``python -m captum_gscorecam``: the ``gscorecam`` command."""

import sys

from captum_gscorecam.cli import main

sys.exit(main())
