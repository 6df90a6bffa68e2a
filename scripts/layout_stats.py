"""Numbers on the package layout (stdlib `ast` only): modules, the longest function, in-function imports,
and import cycles between negotiax modules.

    python scripts/layout_stats.py [package_dir]   # default: negotiax/ next to this script's folder
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an `from ... import` names (relative levels resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> list[tuple[str, bool]]:
    """(imported negotiax module, at module level?) for every import in the file; `from pkg import mod`
    counts as importing pkg.mod when that is a module."""
    top_level = {id(n) for n in tree.body} | {id(n) for n in ast.walk(tree)
                                              if isinstance(n, (ast.Import, ast.ImportFrom)) and _in_top_guard(tree, n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, module, is_package)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        out += [(name, id(node) in top_level) for name in names]
    return out


def _in_top_guard(tree: ast.Module, target: ast.AST) -> bool:
    """Imports inside a module-level `if`/`try` (e.g. TYPE_CHECKING, optional deps) are module-level."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.If, ast.Try)) and any(n is target for n in ast.walk(stmt)):
            return True
    return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stats(root: Path) -> dict:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    graph: dict[str, set[str]] = {}  # module-level imports only
    full: dict[str, set[str]] = {}  # in-function imports too
    longest = ("", 0)
    inner = 0
    for f in files:
        mod = module_name(f, root)
        tree = ast.parse(f.read_text(), str(f))
        edges, all_edges = set(), set()
        for name, top in imports(tree, mod, f.name == "__init__.py", known):
            if not top:
                inner += 1
            while name and name not in known:  # `negotiax.x.func` -> negotiax.x
                name = name.rpartition(".")[0]
            if name and name != mod:
                all_edges.add(name)
                if top:
                    edges.add(name)
        graph[mod], full[mod] = edges, all_edges
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > longest[1]:
                    longest = (f"{mod}.{node.name}", length)
    top = root.name
    packages = {}  # negotiax.<first part>: the top-level module or subpackage
    for mod, targets in full.items():
        src = ".".join(mod.split(".")[:2])
        packages.setdefault(src, set()).update(".".join(t.split(".")[:2]) for t in targets
                                               if t != top and ".".join(t.split(".")[:2]) != src)
    return {"modules": len(files), "longest_function": longest, "in_function_imports": inner,
            "cycles": cycles(graph), "cycles_with_function_imports": cycles(full),
            "package_cycles": cycles(packages)}


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "negotiax"
    s = stats(root)
    print(f"modules: {s['modules']}")
    print(f"longest function: {s['longest_function'][0]} ({s['longest_function'][1]} lines)")
    print(f"in-function imports: {s['in_function_imports']}")
    for key, what in (("cycles", "import cycles (module-level imports)"),
                      ("cycles_with_function_imports", "import cycles (counting in-function imports)"),
                      ("package_cycles", "import cycles between top-level modules/subpackages")):
        print(f"{what}: {len(s[key])}" + "".join(f"\n  {' <-> '.join(c)}" for c in s[key]))


if __name__ == "__main__":
    main()
