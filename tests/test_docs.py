"""The docs cannot drift: docs/cli.md is what `--help` prints (cog), every command has
help and an example, the exit-code table is the code's, every document a message or a
page cites exists, and the README stays short."""

import io
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from narrator.cli import app

ROOT = Path(__file__).parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
README_LINES = 200
# A page named in narrator's code: any name ending in .md, or a path under docs/ or bench/.
PAGE = re.compile(r"(?<![\w.])((?:[\w-]+/)*[\w-]+\.md)\b")
DOCS_PATH = re.compile(r"(?<![\w./-])((?:docs|bench)/[\w./-]*[\w/])")


def walk(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command under `group` (Typer's Click group) by its full name, groups included."""
    for name, command in group.commands.items():
        yield " ".join((*prefix, name)), command
        if hasattr(command, "commands"):
            yield from walk(command, (*prefix, name))


def commands() -> dict[str, Any]:
    return dict(walk(get_command(app)))


def leaf_commands() -> dict[str, Any]:
    return {name: c for name, c in commands().items() if not hasattr(c, "commands")}


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section of a Markdown page."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"no '## {heading}' section"
    return found.group(1)


def test_reference_is_current() -> None:
    from cogapp import Cog  # the test extra

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        status = Cog().main(["cog", "--check", "--diff", str(CLI_MD)])
    assert status == 0, "docs/cli.md is stale: run .venv/bin/cog -r docs/cli.md\n" + out.getvalue()


def test_every_command_is_documented() -> None:
    documented = set(re.findall(r"^## narrator ([a-z -]+)$", CLI_MD.read_text(), re.M))
    assert documented == set(commands())


@pytest.mark.parametrize("name", sorted(leaf_commands()))
def test_every_command_has_help_and_an_example(name: str) -> None:
    command = leaf_commands()[name]
    assert command.help, f"{name}: no help"
    assert "Example:" in command.help, f"{name}: its docstring has no 'Example:' block"
    bare = [p.name for p in command.params if not getattr(p, "help", None)]
    assert not bare, f"{name}: no help for {bare}"


def test_every_group_has_help() -> None:
    groups = {"narrator": get_command(app)} | {
        name: c for name, c in commands().items() if hasattr(c, "commands")
    }
    bare = [name for name, group in groups.items() if not group.help]
    assert not bare, f"no help: {bare}"


def test_exit_codes_match_the_cli() -> None:
    from narrator.cli import EX_INTERRUPTED, EX_SOFTWARE, EXIT_CODES

    table = section(CLI_MD.read_text(), "Exit codes")
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert len(documented) == len(set(documented)), "a code is listed twice"
    assert set(documented) == {0, 1, 2, EX_SOFTWARE, EX_INTERRUPTED, *EXIT_CODES.values()}


def test_documents_cited_in_messages_exist() -> None:
    """A message (or comment) under narrator/ that names a page names one that exists."""
    cited = set()
    for path in (ROOT / "narrator").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        cited |= set(PAGE.findall(text)) | set(DOCS_PATH.findall(text))
    missing = sorted(name for name in cited if not (ROOT / name).exists())
    assert not missing, f"cited but not in the repository: {missing}"


def anchors(page: Path) -> set[str]:
    """The fragments GitHub gives a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_exist() -> None:
    pages = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("bench/*.md"),
    ]
    broken = []
    for page in pages:
        for target, fragment in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = page.parent / target if target else page
            if not linked.exists() or (
                fragment and linked.suffix == ".md" and fragment not in anchors(linked)
            ):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{fragment}")
    assert not broken, broken


def test_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines; move detail to docs/"
