"""The house rules of narrator's imports, read from the source with `ast` (lazy imports
inside functions included): no circles, nothing imports the CLI, and `engine/` (what
rendering loads) leans only on foundations: `errors`, and modules that import nothing of
narrator but `errors` themselves."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "narrator"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each narrator module -> the narrator modules it imports, anywhere in its code."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("narrator"):
                    found.add(target)
        graph[name] = found - {"narrator"}  # the package's own __init__ holds only a version
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_names_a_module() -> None:
    """A lazy import of a module that moved fails only when its function runs."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    missing = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            missing += [
                f"{path.name}:{node.lineno} {name}"
                for name in names
                if name.startswith("narrator") and name not in modules
            ]
    assert missing == []


def test_no_import_circles() -> None:
    assert cycles(imports()) == []


def test_nothing_imports_the_cli() -> None:
    """But `python -m narrator`, which runs it."""
    graph = imports()
    assert [
        name
        for name, targets in graph.items()
        if "narrator.cli" in targets and name != "narrator.__main__"
    ] == []


# What rendering may lean on outside engine/: plain-value modules with no database, no
# project and no rendering of their own.
FOUNDATIONS = {
    "narrator.errors",
    "narrator.text",
    "narrator.atomic",
    "narrator.voices",
    "narrator.lexicon",
    "narrator.splitting",
}


def _reaching_out(package: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    found = {
        name: sorted(t for t in targets if not t.startswith(allowed) and t not in FOUNDATIONS)
        for name, targets in imports().items()
        if name.startswith(package)
    }
    return {name: targets for name, targets in found.items() if targets}


def test_foundations_lean_on_foundations_only() -> None:
    graph = imports()
    assert {name: sorted(graph[name] - FOUNDATIONS) for name in FOUNDATIONS} == {
        name: [] for name in FOUNDATIONS
    }


def test_the_engine_leans_only_on_the_model_on_disk_and_foundations() -> None:
    """What generate-all loads to render: engine/, weights/ (where the model is, its packs and
    graphs) and the foundations."""
    assert _reaching_out("narrator.engine", ("narrator.engine", "narrator.weights")) == {}


def test_the_model_on_disk_knows_no_renderer() -> None:
    """weights/ sits below engine/: it makes and reads model folders and renders nothing."""
    assert _reaching_out("narrator.weights", ("narrator.weights",)) == {}
