"""Griffe extension: read Captum-style docstrings as Google-style ones for the API reference.

Captum's docstrings (and this package's, which follow them) put a blank line after ``Args:``,
indent each argument's description far to the right, write ``Examples::`` and Sphinx roles such
as ``:func:`~module.name```. Griffe's Google parser reads a section only when its first entry
follows the title directly, and a ``Raises:`` entry only when its wrapped lines are indented, so
this extension removes that blank line, indents those lines, turns ``Examples::`` into
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
RAISES = re.compile(r"^[ \t]*(?:Raises|Warns):[ \t]*$")
EXCEPTION = re.compile(r"^[ \t]*[A-Za-z_][\w.]*:(?:\s|$)")
ROLE = re.compile(r":(?:func|class|meth|mod|attr|obj|data|exc):`~?(?:[\w.]*\.)?(?P<name>[\w]+)`")


def indent_continuations(text: str) -> str:
    """Indent the wrapped lines of a ``Raises:`` entry written flush with the entry's name."""
    lines, indent = text.split("\n"), None
    for i, line in enumerate(lines):
        if RAISES.match(line):
            indent = ""
            continue
        if indent is None:
            continue
        if not line.strip():
            indent = None  # a blank line ends the section
        elif indent == "":
            indent = line[: len(line) - len(line.lstrip())]
        elif (
            line.startswith(indent)
            and not line.startswith(indent + " ")
            and not EXCEPTION.match(line)
        ):
            lines[i] = indent + "    " + line[len(indent) :]
    return "\n".join(lines)


def captum_to_google(text: str) -> str:
    """The docstring as griffe's Google parser reads it (see the module's docstring)."""
    text = SECTION_GAP.sub(lambda m: m.group("title").rstrip(":") + ":\n", text)
    text = indent_continuations(text)
    return ROLE.sub(lambda m: f"`{m.group('name')}`", text)


class CaptumDocstrings(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for each object it loads."""
        if obj.docstring is not None:
            obj.docstring.value = captum_to_google(obj.docstring.value)
