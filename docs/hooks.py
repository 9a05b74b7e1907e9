"""MkDocs hook: the pages that are made from the code and the results files at build time.

Nothing here is copied by hand, so none of it can drift:

- ``cli.md``: every command's options table and ``--help``, from ``captum_gscorecam.cli.parser()``;
- ``reference/``: one page per public module of the package, found by walking its folders, each
  rendered from the docstrings by mkdocstrings;
- ``changelog.md``: ``CHANGELOG.md``; ``tutorial.ipynb``: ``tutorials/gscorecam_tour.ipynb``
  (rendered by mkdocs-jupyter, not executed: the suite runs it);
- the figures under ``benchmarks/results/``, served at the same path below the site's
  ``benchmarks/``, and ``benchmarks/more.md``: every results file no benchmark page includes;
- ``methods/<key>.md`` for an explainer of ``gscorecam explain --method`` that has no page yet
  (a page written under ``docs/methods/`` but left out of ``mkdocs.yml``'s nav is added to it);
- the formulas (``$...$``, ``$$...$$``) as MathML, made by latex2mathml, so they show without
  a script or a network;
- in any page, ``{{ results("benchmarks/results/x.md") }}`` (the file's text, its headings moved
  below the page's), ``{{ tests("tests/test_x.py") }}`` (the test functions in a file),
  ``{{ tests_total }}``, ``{{ constant("NAME") }}``, ``{{ percent("NAME") }}`` and
  ``{{ fraction("NAME") }}`` (a module-level constant of the package or of the tests).
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from fractions import Fraction
from functools import cache
from html import unescape
from operator import add, mul, sub, truediv
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "captum_gscorecam"
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = (".png", ".svg", ".jpg")
# The methods that docs/methods/captum.md and the other method pages cover: a page lists its
# keys in a comment, "<!-- methods: gradcam occlusion -->".
METHODS_MARK = re.compile(r"<!--\s*methods:\s*([\w\s]+?)\s*-->")
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)(?:\(\s*\"([^\"]*)\"\s*\))?\s*\}\}")

if str(ROOT) not in sys.path:  # the checkout's package, not another installed copy
    sys.path.insert(0, str(ROOT))


# -- the package's public modules -------------------------------------------------------------


def public_modules() -> list[str]:
    """Every importable module of the package whose dotted name has no part starting with ``_``.

    Found from the files, without importing anything, so the list follows the code as modules
    are added, moved or split.
    """
    names = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        folders = path.parent.relative_to(ROOT).parts
        packages = (ROOT.joinpath(*folders[:i]) for i in range(1, len(folders) + 1))
        if not all((folder / "__init__.py").is_file() for folder in packages):
            continue  # a folder that is no package (data, checkpoints)
        parts = (*folders, path.stem) if path.stem != "__init__" else folders
        if not any(part.startswith("_") for part in parts[1:]):
            names.append(".".join(parts))
    return names


def module_summary(name: str) -> str:
    """The first line of a module's docstring."""
    path = ROOT.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def reference_uri(name: str) -> str:
    """Where a module's API page lies in the site."""
    return f"reference/{name}.md"


def reference_page(name: str) -> str:
    """A module's API page: its name and its docstrings, rendered by mkdocstrings."""
    return f"# `{name}`\n\n::: {name}\n"


def package_exports() -> dict[str, str]:
    """``captum_gscorecam.__all__``'s names and the modules defining them (its ``_EXPORTS``)."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    exports: dict[str, str] = {}
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "_EXPORTS":
                exports = ast.literal_eval(node.value)
            if node.targets[0].id == "__all__":
                names = ast.literal_eval(node.value)
    return {name: exports.get(name, PACKAGE) for name in names}


def reference_index() -> str:
    """The API reference's index: the package's public names, then every public module."""
    names = "\n".join(
        f"| [`{name}`]({module}.md#{module}.{name}) | `{module}` |"
        for name, module in package_exports().items()
    )
    rows = "\n".join(
        f"| [`{name}`]({name}.md) | {escape_cell(module_summary(name))} |"
        for name in public_modules()
    )
    return (
        "# API reference\n\n"
        "Made from the docstrings at build time. The names most code needs are importable from "
        "`captum_gscorecam` itself (`captum_gscorecam.__all__`):\n\n"
        "| name | defined in |\n|---|---|\n" + names + "\n\n"
        "## Modules\n\nOne page per public module of the package.\n\n"
        "| module | what it holds |\n|---|---|\n" + rows + "\n"
    )


# -- the command line ---------------------------------------------------------------------------


def escape_cell(text: str) -> str:
    """Text that fits in one cell of a Markdown table."""
    return text.replace("|", "\\|").replace("\n", " ")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's commands and their parsers, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_rows(parser: argparse.ArgumentParser) -> Iterator[str]:
    """A Markdown table row per argument of a command: the option, its default, its help."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        name = ", ".join(action.option_strings) or (action.metavar or action.dest)
        if action.option_strings and action.nargs != 0:
            default_metavar = formatter._get_default_metavar_for_optional(action)
            name = f"{name} {formatter._format_args(action, default_metavar)}"
        if action.required and action.option_strings:
            default = "(required)"
        elif not action.option_strings:
            default = "(required)" if action.nargs in (None, "+") else ""
        elif action.nargs == 0:
            default = "off" if not action.default else "on"
        elif action.default is None:
            default = "see meaning" if "default" in (action.help or "") else "none"
        else:
            default = f"`{action.default}`"
        text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        yield f"| `{escape_cell(name)}` | {escape_cell(default)} | {escape_cell(text)} |"


def help_text(parser: argparse.ArgumentParser) -> str:
    """What ``--help`` prints."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        parser.print_help()
    return buffer.getvalue().rstrip()


def cli_page() -> str:
    """The ``gscorecam`` reference: each command's description, options table and ``--help``."""
    from captum_gscorecam.cli import parser as make_parser

    saved = {key: os.environ.get(key) for key in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS="100", NO_COLOR="1")  # the help's width, the same everywhere
    try:
        root = make_parser()
        out = [
            "# Command line\n",
            "Made at build time from the parser of the installed `gscorecam` command "
            "(`captum_gscorecam.cli.parser()`), so it says what `--help` says. "
            "`python -m captum_gscorecam` is the same command. The [user guide](guide/index.md) "
            "says when to use which option.\n",
            "```text\n" + help_text(root) + "\n```\n",
        ]
        for name, sub in subcommands(root).items():
            description = " ".join((sub.description or "").split())
            out += [
                f"## gscorecam {name}\n",
                f"{description}\n" if description else "",
                "| option | default | meaning |\n|---|---|---|",
                *option_rows(sub),
                "",
                f'??? note "`gscorecam {name} --help`"\n',
                "    ```text\n"
                + "\n".join(f"    {line}".rstrip() for line in help_text(sub).splitlines())
                + "\n    ```\n",
            ]
        return "\n".join(out)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@cache
def method_keys() -> dict[str, str]:
    """``gscorecam explain --method``'s choices and their one-line help, in the parser's order."""
    from captum_gscorecam.cli import parser as make_parser

    explain = subcommands(make_parser())["explain"]
    choices = next(a.choices for a in explain._actions if a.dest == "method")
    lines = dict(
        re.findall(r"^\s+(\w+)\s{2,}(.+)$", explain.epilog or "", flags=re.M)  # "  key  help"
    )
    return {key: lines.get(key, "") for key in choices}


def documented_methods() -> set[str]:
    """The method keys that the hand-written pages under ``docs/methods/`` cover."""
    keys: set[str] = set()
    for page in (ROOT / "docs" / "methods").glob("*.md"):
        for match in METHODS_MARK.finditer(page.read_text()):
            keys.update(match.group(1).split())
    return keys


def method_page(key: str, line: str) -> str:
    """The page of a method that has none yet: its help line and where to read more."""
    return (
        f"# `{key}`\n\n{line}.\n\n"
        "This explainer has no page of its own yet: its class's docstring in the "
        "[API reference](../reference/index.md) states its formula and arguments, and "
        f"`gscorecam explain --method {key}` runs it (see the [command line](../cli.md)).\n"
    )


# -- benchmarks ---------------------------------------------------------------------------------


def results_files() -> list[Path]:
    """Every results file the benchmark scripts wrote."""
    return sorted(RESULTS.rglob("*.md"))


def included_results() -> set[Path]:
    """The results files that a page of the site includes."""
    found = set()
    for page in (ROOT / "docs").rglob("*.md"):
        for name, argument in PLACEHOLDER.findall(page.read_text()):
            if name == "results":
                found.add((ROOT / argument).resolve())
    return found


def more_results_page() -> str:
    """A page with every results file that no other page includes."""
    rest = [p for p in results_files() if p.resolve() not in included_results()]
    out = [
        "# More results\n",
        "Every results file under `benchmarks/results/` that the pages above do not show, "
        "included as written by the script that made it.\n",
    ]
    if not rest:
        out.append("Every results file is shown on the pages above.\n")
    for path in rest:
        out += [f"## `{path.relative_to(ROOT)}`\n", results_text(path, 2)]
    return "\n".join(out)


def results_text(path: Path, level: int) -> str:
    """A results file's text, its headings moved down so that the first is at ``level + 1``."""
    text = path.read_text()
    levels = [len(h) for h in re.findall(r"^(#+) ", text, flags=re.M)]
    shift = level + 1 - min(levels) if levels else 0
    return re.sub(
        r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", text, flags=re.M
    )


# -- counts and constants -----------------------------------------------------------------------


def test_functions(path: Path) -> int:
    """The test functions in a test file: ``test_*`` at module level and in ``Test*`` classes."""
    tree = ast.parse(path.read_text())
    count = 0
    for node in tree.body:
        function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if function and node.name.startswith("test"):
            count += 1
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            count += sum(
                isinstance(item, ast.FunctionDef) and item.name.startswith("test")
                for item in node.body
            )
    return count


def constant(name: str) -> Any:
    """The literal value a module of the package or of the tests assigns to ``name``."""
    for path in [*sorted((ROOT / PACKAGE).rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return arithmetic(node.value)
    raise KeyError(f"no module-level constant {name} in {PACKAGE}/ or tests/")


def arithmetic(node: ast.expr) -> Any:
    """A literal, or arithmetic on numbers (``1 / 7``), as Python computes it."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        left, right = arithmetic(node.left), arithmetic(node.right)
        operations = {ast.Add: add, ast.Sub: sub, ast.Mult: mul, ast.Div: truediv}
        return operations[type(node.op)](left, right)
    return ast.literal_eval(node)


def fill(markdown: str, page: str) -> str:
    """A page with its placeholders replaced by what they name (see the module's docstring)."""

    def value(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name == "results":
            return results_text(ROOT / argument, 2)
        if name == "tests":
            return str(test_functions(ROOT / argument))
        if name == "tests_total":
            return str(sum(test_functions(p) for p in (ROOT / "tests").rglob("test_*.py")))
        if name == "constant":
            return str(constant(argument))
        if name == "percent":
            return f"{constant(argument) * 100:g}%"
        if name == "fraction":
            share = Fraction(constant(argument)).limit_denominator(1000)
            return f"{share.numerator}/{share.denominator}"
        raise ValueError(f"{page}: unknown placeholder {match.group(0)}")

    return PLACEHOLDER.sub(value, markdown)


# -- the MkDocs events --------------------------------------------------------------------------


def expand_nav(nav: list[Any], title: str, entries: list[Any]) -> bool:
    """Put ``entries`` into the nav section called ``title`` (after its index page)."""
    for item in nav:
        if isinstance(item, dict) and title in item:
            section = item[title]
            if isinstance(section, str):
                item[title] = [section, *entries]
            else:
                section.extend(entries)
            return True
    return False


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Add the generated pages to the nav: API modules, methods without a page, more results."""
    nav = config.nav or []
    expand_nav(
        nav,
        "API reference",
        [{name.removeprefix(f"{PACKAGE}."): reference_uri(name)} for name in public_modules()],
    )
    listed = set(re.findall(r"methods/[\w-]+\.md", str(nav)))
    written = sorted(p.name for p in (ROOT / "docs" / "methods").glob("*.md"))
    unlisted = [f"methods/{name}" for name in written if f"methods/{name}" not in listed]
    missing = [f"methods/{k}.md" for k in method_keys() if k not in documented_methods()]
    expand_nav(nav, "Methods", [*unlisted, *missing])  # titled by their first heading
    expand_nav(nav, "Benchmarks", [{"More results": "benchmarks/more.md"}])
    return config


@event_priority(100)  # before mkdocs-jupyter looks for notebooks among the files
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages and the files read where they lie (notebook, figures)."""
    generated = {
        "cli.md": cli_page(),
        "reference/index.md": reference_index(),
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(),
        "benchmarks/more.md": more_results_page(),
    }
    generated.update({reference_uri(name): reference_page(name) for name in public_modules()})
    documented = documented_methods()
    for key, line in method_keys().items():
        if key not in documented:
            generated[f"methods/{key}.md"] = method_page(key, line)
    for uri, content in generated.items():
        if uri not in files.src_uris:  # a page written by hand wins over a generated one
            files.append(File.generated(config, uri, content=content))
    # Real files, read where they lie: the notebook and the results figures keep their paths.
    sources = [ROOT / "tutorials" / "gscorecam_tour.ipynb"]
    sources += [p for p in sorted(RESULTS.rglob("*")) if p.suffix in FIGURES]
    for path in sources:
        files.append(
            File(
                path.relative_to(ROOT).as_posix(),
                src_dir=str(ROOT),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]\s*</(?P=tag)>',
    flags=re.S,
)


def mathml(html: str) -> str:
    r"""The page with each formula arithmatex marked (``\(...\)``, ``\[...\]``) as MathML."""
    from latex2mathml.converter import convert

    def render(match: re.Match[str]) -> str:
        display = "block" if match.group("open") == "[" else "inline"
        return convert(unescape(match.group("tex")).strip(), display=display)

    return MATH.sub(render, html)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Render the page's formulas as MathML."""
    return mathml(html)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Fill in each page's placeholders."""
    return fill(markdown, page.file.src_uri)
