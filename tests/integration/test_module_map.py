"""docs/development.md's module map lists every module of the package, each once, and no other."""

from __future__ import annotations

import re

from tests.helpers import ROOT
from tests.integration.test_imports import SOURCE, module_files

ROW = re.compile(r"^\| `(captum_gscorecam[\w.]*)` \|", re.MULTILINE)


def test_the_module_map_lists_every_module_once():
    listed = ROW.findall((ROOT / "docs" / "development.md").read_text())
    assert sorted(listed) == sorted(set(listed)), "a module listed twice"
    assert set(listed) == set(module_files(SOURCE))
