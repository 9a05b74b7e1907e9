"""Griffe extension: read Captum-style docstrings as Google-style ones for the API reference.

Captum's docstrings (and this package's, which follow them) put a blank line after ``Args:``,
indent each argument's description far to the right, write ``Examples::`` and Sphinx roles such
as ``:func:`~module.name```. Griffe's Google parser reads a section only when its first entry
follows the title directly, so this extension removes that blank line, turns ``Examples::`` into
``Examples:`` and a role into the object's name in code, before the docstrings are parsed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

SECTION_GAP = re.compile(
    r"^(?P<title>[ \t]*(?:Args|Arguments|Parameters|Returns|Yields|Raises|Warns|Attributes|"
    r"Examples?)::?)[ \t]*\n(?:[ \t]*\n)+",
    flags=re.M,
)
ROLE = re.compile(r":(?:func|class|meth|mod|attr|obj|data|exc):`~?(?:[\w.]*\.)?(?P<name>[\w]+)`")


def captum_to_google(text: str) -> str:
    """The docstring with its section titles followed directly by their first entry."""
    text = SECTION_GAP.sub(lambda m: m.group("title").rstrip(":") + ":\n", text)
    return ROLE.sub(lambda m: f"`{m.group('name')}`", text)


class CaptumDocstrings(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for each object it loads."""
        if obj.docstring is not None:
            obj.docstring.value = captum_to_google(obj.docstring.value)
