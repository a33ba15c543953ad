"""Imports inside t5edu point one way: the module graph, read from the source (AST), has no
cycle beyond the ones listed in KNOWN_CYCLES, which issue 12's layout is to remove.

Every import counts, the function-local ones too: a local import that dodges a circle at
import time still ties the two modules together. A new cycle fails here, and so does a listed
one that has gone (then shrink the list).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t5edu"

# t5_model's from_pretrained/save_pretrained call t5edu.hf, which builds T5ForConditionalGeneration
KNOWN_CYCLES = [{"t5edu.hf", "t5edu.t5_model"}]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the t5edu modules it imports (`from t5edu.x import y` names t5edu.x.y when
    that is a module, else t5edu.x)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..y import z
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]  # fmt: skip
            else:
                continue
            for target in targets:
                while target and target not in modules:  # t5edu.x.func -> t5edu.x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "t5edu.backends" in graph["t5edu.multi_head_attention"]
    assert "t5edu.attention" in graph["t5edu.backends"]
    assert "t5edu.kernels.triton_attention" in graph["t5edu.kernels"]  # a local import counts
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_beyond_the_known_ones():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not new, f"new import cycles in t5edu: {new}"
    assert not gone, f"listed cycles no longer exist, remove them from KNOWN_CYCLES: {gone}"
