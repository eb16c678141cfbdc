"""The README documents every command the app has, and nothing it lacks."""

import re
from pathlib import Path

from typer.main import get_command

from narrator.cli import app

README = Path(__file__).parent.parent / "README.md"


def commands() -> set[str]:
    root = get_command(app)
    names = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    return names


def test_every_command_is_documented() -> None:
    documented = set(re.findall(r"^### `narrator ([a-z -]+)`$", README.read_text(), re.M))
    assert documented == commands()


def test_exit_codes_match_the_cli() -> None:
    from narrator.cli import EX_INTERRUPTED, EX_SOFTWARE, EXIT_CODES

    table = {int(c) for c in re.findall(r"^\| (\d+) \|", README.read_text(), re.M)}
    assert table == {0, 1, EX_SOFTWARE, EX_INTERRUPTED, *EXIT_CODES.values()}


def test_documents_cited_in_messages_exist() -> None:
    root = Path(__file__).parent.parent
    cited = {
        name for path in (root / "narrator").rglob("*.py")
        for name in re.findall(r"\b([\w./-]+\.md)\b", path.read_text(encoding="utf-8"))
    }
    assert all((root / name).is_file() for name in cited), cited
