"""The direction of dependency (docs/architecture.md): gateway depends on parking, never the
reverse, and neither package has an import circle. Read from the source with `ast`, every import
counted, also those inside functions or under TYPE_CHECKING: a lazy import is still a dependency."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("parking", "gateway")


def module_name(path: Path) -> str:
    """`parking/api/lots.py` -> `parking.api.lots`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(package: str) -> dict[str, Path]:
    """Every module of the package by name (migration scripts are Alembic's, not the package's)."""
    return {
        module_name(path): path
        for path in sorted((ROOT / package).rglob("*.py"))
        if "versions" not in path.relative_to(ROOT).parts
    }


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules `name` imports, resolved to the most specific known module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # `from . import payloads` imports the module gateway.payloads.
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known or target.split(".")[0] in PACKAGES:
                found.add(target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, over both packages."""
    modules = {name: path for package in PACKAGES for name, path in sources(package).items()}
    known = set(modules)
    return {name: imports(name, path, known) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_parking_never_imports_gateway():
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items() if name.split(".")[0] == "parking"
        for target in targets if target.split(".")[0] == "gateway"
    )
    assert not wrong, "the core must not depend on the gateway: " + "; ".join(wrong)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_inside_a_package(package):
    # A package and the modules its __init__ puts together (create_app) are one node each; an
    # import of the package itself from one of its modules counts like any other.
    edges = {
        name: {t for t in targets if t.split(".")[0] == package}
        for name, targets in graph().items() if name.split(".")[0] == package
    }
    assert cycles(edges) == [], f"import circles in {package}"


def test_the_walk_sees_imports_of_every_kind():
    """The checks above can fail: the walk finds relative, absolute, lazy and TYPE_CHECKING imports."""
    edges = graph()
    assert "parking.ingest" in edges["gateway.payloads"]  # absolute, module level
    assert "gateway.errors" in edges["gateway.writer"]  # relative, module level
    assert "gateway.writer_process" in edges["gateway.writer"]  # `from . import writer_process`
    assert "parking" in edges["gateway.writer_process"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_architecture_places_every_module():
    """docs/architecture.md names every module of the three packages by its path."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    unplaced = sorted(
        str(path.relative_to(ROOT))
        for package in (*PACKAGES, "service")
        for path in sources(package).values()
        if f"`{path.relative_to(ROOT)}`" not in text
    )
    assert not unplaced, "docs/architecture.md, 'Where each module lives', does not place: " + ", ".join(unplaced)
