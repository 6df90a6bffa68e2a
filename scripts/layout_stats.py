"""Numbers on the package layout (stdlib `ast` only): modules, the longest function, in-function imports,
and import cycles between negotiax modules. tests/test_layout.py checks the layering rules with the same
import graph.

    python scripts/layout_stats.py [package_dir]   # default: negotiax/ next to this script's folder
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parent.parent / "negotiax"


class Import(NamedTuple):
    module: str  # the importing module, e.g. negotiax.pipeline
    target: str  # a negotiax module (negotiax.train.trainer) or, outside the package, the full dotted name
    top_level: bool  # at module level (also inside a module-level if/try), not inside a function or class
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names (relative levels resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level(tree: ast.Module) -> set[int]:
    """ids of the import nodes at module level, counting those inside module-level `if` / `try` blocks."""
    out = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.add(id(stmt))
        elif isinstance(stmt, (ast.If, ast.Try)):
            out |= {id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def _known_module(name: str, known: set[str]) -> str:
    """`negotiax.x.func` -> negotiax.x: the longest prefix that is a module of the package."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def imports(root: Path = PACKAGE) -> list[Import]:
    """Every import statement of every module under `root`, one row per imported name."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    out = []
    for f in files:
        mod = module_name(f, root)
        tree = ast.parse(f.read_text(), str(f))
        top = _module_level(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, f.name == "__init__.py")
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for name in names:
                inside = _known_module(name, known)
                out.append(Import(mod, inside or name, id(node) in top, node.lineno))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graphs(rows: list[Import], package: str = "negotiax") -> dict[str, dict[str, set[str]]]:
    """Import graphs between the package's modules: module-level imports only, all imports, and all imports
    between the top-level modules / subpackages (negotiax.<first part>; the package's own __init__ aside)."""
    inside = [r for r in rows if r.target.split(".")[0] == package and r.target != r.module]
    top: dict[str, set[str]] = {}
    full: dict[str, set[str]] = {}
    packages: dict[str, set[str]] = {}
    for r in inside:
        full.setdefault(r.module, set()).add(r.target)
        if r.top_level:
            top.setdefault(r.module, set()).add(r.target)
        src, dst = (".".join(m.split(".")[:2]) for m in (r.module, r.target))
        if src != dst and package not in (src, dst):
            packages.setdefault(src, set()).add(dst)
    return {"module-level imports": top, "all imports": full, "top-level modules and subpackages": packages}


def function_lengths(root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(lines, module.function) for every function and method, longest first."""
    out = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{module_name(f, root)}.{node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    rows = imports(root)
    length, name = function_lengths(root)[0]
    print(f"modules: {len(list(root.rglob('*.py')))}")
    print(f"longest function: {name} ({length} lines)")
    print(f"in-function imports: {sum(not r.top_level for r in rows)}")
    for what, graph in graphs(rows, root.name).items():
        found = cycles(graph)
        print(f"import cycles ({what}): {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))


if __name__ == "__main__":
    main()
