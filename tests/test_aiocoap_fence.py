"""aiocoap's internals behind one fence: gateway/transport.py uses them, lists them, and this
canary fails naming the missing one when an aiocoap release drops or renames one.

The private names of aiocoap are those it defines with a leading underscore (read from its
installed sources) and everything in its internal modules (the message and token managers, the
pipes, the transports, `aiocoap.util`, whose docstring keeps it out of the stable API).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import aiocoap
import aiocoap.meta
import pytest

from gateway import transport
from gateway.transport import AIOCOAP_INTERNALS, Internal, missing_internals

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
INTERNAL_MODULES = ("aiocoap.messagemanager", "aiocoap.tokenmanager", "aiocoap.pipe",
                    "aiocoap.transports", "aiocoap.util")


def aiocoap_private_names() -> set[str]:
    """Every single-underscore name aiocoap's sources define (methods, attributes, members)."""
    names: set[str] = set()
    for path in Path(aiocoap.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"def (_[A-Za-z]\w*)", text))
        names |= set(re.findall(r"self\.(_[A-Za-z]\w*)\s*[:=]", text))
        names |= set(re.findall(r"^\s+(_[A-Za-z]\w*)\s*=", text, re.M))
    return names


PRIVATE = aiocoap_private_names()


def _is_internal(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in INTERNAL_MODULES)


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def fence_breaches(source: str) -> list[str]:
    """Uses of aiocoap's private names in one module's source, each described."""
    tree = ast.parse(source)
    breaches, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "aiocoap":
                    aliases.add((alias.asname or alias.name).split(".")[0])
                    if _is_internal(alias.name):
                        breaches.append(f"line {node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "aiocoap":
            aliases |= {alias.asname or alias.name for alias in node.names}
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if any(_is_internal(m) for m in modules):
                breaches.append(f"line {node.lineno}: imports from {node.module}")
    # Classes of the module that are aiocoap's subclasses, directly or through one another.
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    subclasses: set[str] = set()
    while True:
        more = {c.name for c in classes
                if any(isinstance(r := _root(b), ast.Name) and (r.id in aliases or r.id in subclasses) for b in c.bases)}
        if more <= subclasses:
            break
        subclasses |= more
    own = {t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign | ast.AnnAssign)
           for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
    for c in classes:
        if c.name not in subclasses:
            continue
        for n in ast.walk(c):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name in PRIVATE:
                breaches.append(f"line {n.lineno}: {c.name} overrides aiocoap's {n.name}")
            elif (isinstance(n, ast.Attribute) and n.attr in PRIVATE and n.attr not in own
                  and isinstance(n.value, ast.Name) and n.value.id == "self"):
                breaches.append(f"line {n.lineno}: {c.name} uses aiocoap's self.{n.attr}")
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__"):
            root = _root(n.value)
            if isinstance(root, ast.Name) and root.id in aliases:
                breaches.append(f"line {n.lineno}: {ast.unparse(n)}")
            elif isinstance(n.value, ast.Call) and ast.unparse(n.value.func) == "super" and n.attr in PRIVATE:
                breaches.append(f"line {n.lineno}: super().{n.attr}")
    return breaches


def test_the_installed_aiocoap_has_every_internal_the_gateway_relies_on():
    missing = missing_internals()
    assert not missing, (
        f"aiocoap {aiocoap.meta.version} lacks what gateway/transport.py relies on: {', '.join(missing)}. "
        "Keep aiocoap at the range pinned in pyproject.toml, or adapt transport.py to the new release."
    )


def test_the_canary_names_a_missing_internal(monkeypatch):
    from aiocoap import messagemanager, resource

    monkeypatch.delattr(messagemanager.MessageManager, "_deduplicate_message")
    monkeypatch.delattr(resource.Site, "_find_child_and_pathstripped_message")
    gone = [Internal("aiocoap.nothere", "X"), Internal("aiocoap.resource", "Site", "_not_set_anywhere")]
    assert missing_internals((*AIOCOAP_INTERNALS, *gone)) == [
        "aiocoap.messagemanager.MessageManager._deduplicate_message",
        "aiocoap.resource.Site._find_child_and_pathstripped_message",
        "aiocoap.nothere.X",
        "aiocoap.resource.Site._not_set_anywhere",
    ]


@pytest.mark.parametrize("path", sorted(p for p in GATEWAY.rglob("*.py") if p.name != "transport.py"),
                         ids=lambda p: str(p.relative_to(GATEWAY)))
def test_no_private_aiocoap_name_outside_transport(path):
    assert fence_breaches(path.read_text(encoding="utf-8")) == []


def test_every_private_name_transport_uses_is_listed():
    """transport.py's own use of aiocoap's privates is exactly what the canary checks."""
    source = Path(transport.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    listed = {part for i in AIOCOAP_INTERNALS for part in [*i.name.split("."), i.set_in_init] if part}
    assert (used & PRIVATE) - listed == set()
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in imported if _is_internal(m)} <= {i.module for i in AIOCOAP_INTERNALS}


@pytest.mark.parametrize("source, breach", [
    ("from aiocoap.messagemanager import MessageManager", "imports from aiocoap.messagemanager"),
    ("import aiocoap.transports.udp6", "imports aiocoap.transports.udp6"),
    ("from aiocoap import util", "imports from aiocoap"),
    ("from aiocoap import resource\nclass S(resource.Site):\n    def _find_child_and_pathstripped_message(self, r): ...",
     "S overrides aiocoap's _find_child_and_pathstripped_message"),
    ("from aiocoap import resource\nclass S(resource.Site):\n    def f(self):\n        return self._resources",
     "S uses aiocoap's self._resources"),
    ("from aiocoap import oscore\nx = oscore.SymmetricEncryptionAlgorithm._build_encrypt0_structure", "oscore.SymmetricEncryptionAlgorithm"),
    ("class S(Base):\n    def f(self):\n        return super()._render_to_pipe(1)", "super()._render_to_pipe"),
])
def test_the_fence_check_sees_each_kind_of_breach(source, breach):
    assert any(breach in b for b in fence_breaches(source)), fence_breaches(source)
