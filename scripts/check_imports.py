"""Import cycles and layering violations of a Python package, from its source alone (stdlib only).

    python scripts/check_imports.py                 # src/derta against derta's layers
    python scripts/check_imports.py PKG_DIR [--layers "a,b;c;d"]

Every ``.py`` file under PKG_DIR is parsed with :mod:`ast` (nothing is imported or run). Each
``import`` and ``from ... import`` counts, at module level or inside a function (a lazy import is
still a dependency), with relative imports resolved; so does ``importlib.import_module("pkg.x")``
with a literal name, or an f-string whose literal start names a module or package (``f"pkg.x.{n}"``
depends on ``pkg.x``). ``from pkg import name`` depends on the module ``pkg.name`` when there is
one, else on ``pkg``.

Two graphs come out of that: modules, and "units" (the package's direct subpackages and top-level
modules: ``derta.eval.run`` belongs to ``eval``, ``derta.io`` to ``io``). The script prints every
cycle of either graph, and every import of a unit from a higher layer, each with file:line, and
exits 1 if there is any. Layers are listed lowest first; a unit may import its own layer and those
below. With layers, a unit that is in no layer is reported too, so a new subpackage gets a place.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# derta, lowest first: shared records and helpers; the stages; the report (reads records and
# summaries, imports no application); the applications that compose stages; the subcommands; the CLI.
DERTA_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("derta", "config", "records", "io", "logs", "stats", "tokens", "templates", "refusal", "gguf")),
    ("stages", ("data", "backends", "attacks", "judges", "analysis", "train", "generate", "serve")),
    ("report", ("report",)),
    ("applications", ("eval", "demo", "deception")),
    ("commands", ("commands",)),
    ("cli", ("cli",)),
]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: Path
    line: int
    lazy: bool  # inside a function: no cycle at import time, but a dependency all the same

    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


@dataclass
class Graph:
    package: str
    modules: dict[str, Path] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def unit(self, module: str) -> str:
        """The direct subpackage or top-level module a module belongs to (the package itself for its __init__)."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def module_names(pkg_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package directory."""
    out = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        rel = path.relative_to(pkg_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve_base(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return None  # beyond the top-level package
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the package's modules."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _import_module_target(call: ast.Call, strings: dict[str, ast.expr]) -> str | None:
    """The module named by ``importlib.import_module(...)`` / ``import_module(...)``, if written out
    (directly, or in a variable last assigned a string or an f-string in the same file)."""
    f = call.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (isinstance(f, ast.Name) and f.id == "import_module")
    if not named or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Name) and arg.id in strings:
        arg = strings[arg.id]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return prefix.rsplit(".", 1)[0] if "." in prefix else None  # "pkg.x.{n}" -> pkg.x; "pkg{n}" says nothing
    return None


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, bool]] = []  # (absolute name, line, lazy)
        self._depth = 0
        self._strings: dict[str, ast.expr] = {}  # variable -> the string or f-string it was last given

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_base(self.module, self.is_package, node.level, node.module)
        if base is None:
            return
        for alias in node.names:
            # `from pkg import x`: the module pkg.x if there is one (decided later), else pkg
            self.found.append((f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno, self._depth > 0))

    def visit_Assign(self, node: ast.Assign) -> None:
        strings = isinstance(node.value, ast.JoinedStr) or (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
        for t in node.targets:
            if isinstance(t, ast.Name):
                if strings:
                    self._strings[t.id] = node.value
                else:
                    self._strings.pop(t.id, None)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        target = _import_module_target(node, self._strings)
        if target:
            self.found.append((target, node.lineno, self._depth > 0))
        self.generic_visit(node)


def build_graph(pkg_dir: str | Path) -> Graph:
    """Modules of the package at ``pkg_dir`` and the imports between them."""
    pkg_dir = Path(pkg_dir)
    graph = Graph(package=pkg_dir.name, modules=module_names(pkg_dir))
    for module, path in graph.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(tree)
        seen = set()
        for name, line, lazy in visitor.found:
            dst = _known(name, graph.modules)
            if dst is None or dst == module or (dst, line) in seen:
                continue
            seen.add((dst, line))
            graph.edges.append(Edge(module, dst, path, line, lazy))
    return graph


# -- cycles -------------------------------------------------------------------------------------------

def strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components (iterative), each sorted; only those with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ.get(root, [])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ.get(nxt, []))))
                elif nxt in on_stack:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return sorted(out)


def shortest_cycle(start: str, succ: dict[str, list[str]], within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside a component (breadth first)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in succ.get(v, []):
            if w not in within:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def _cycles(edges: dict[tuple[str, str], Edge], kind: str) -> list[str]:
    succ: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        succ.setdefault(a, []).append(b)
    lines = []
    for comp in strongly_connected(sorted(succ), succ):
        cycle = shortest_cycle(comp[0], succ, set(comp))
        more = f" (one of {len(comp)} {kind}s that all reach each other: {', '.join(comp)})" if len(comp) > len(cycle) - 1 else ""
        lines.append(f"cycle between {kind}s: {' -> '.join(cycle)}{more}")
        for a, b in zip(cycle, cycle[1:]):
            e = edges[(a, b)]
            via = f" ({e.src} imports {e.dst})" if (a, b) != (e.src, e.dst) else ""
            lines.append(f"  {e.where()}: {a} -> {b}{via}{' (inside a function)' if e.lazy else ''}")
    return lines


def module_cycles(graph: Graph) -> list[str]:
    edges: dict[tuple[str, str], Edge] = {}
    for e in graph.edges:
        edges.setdefault((e.src, e.dst), e)
    return _cycles(edges, "module")


def unit_cycles(graph: Graph) -> list[str]:
    edges: dict[tuple[str, str], Edge] = {}
    for e in graph.edges:
        a, b = graph.unit(e.src), graph.unit(e.dst)
        if a != b:
            edges.setdefault((a, b), e)  # the first import that makes the edge, in file order
    return _cycles(edges, "subpackage")


# -- layers -------------------------------------------------------------------------------------------

def parse_layers(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """``"a,b;c;d"`` (lowest first) -> [("0", ("a", "b")), ("1", ("c",)), ("2", ("d",))]."""
    groups = [tuple(u.strip() for u in g.split(",") if u.strip()) for g in spec.split(";")]
    return [(str(i), g) for i, g in enumerate(groups) if g]


def layer_violations(graph: Graph, layers: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    rank = {u: (i, name) for i, (name, units) in enumerate(layers) for u in units}
    lines = []
    units = sorted({graph.unit(m) for m in graph.modules})
    for u in units:
        if u not in rank:
            first = next(p for m, p in sorted(graph.modules.items()) if graph.unit(m) == u)
            lines.append(f"{_shown(first)}:1: {u} is in no layer (add it to one)")
    for e in graph.edges:
        a, b = graph.unit(e.src), graph.unit(e.dst)
        if a in rank and b in rank and rank[b][0] > rank[a][0]:
            lines.append(f"{e.where()}: {a} (layer {rank[a][1]}) imports {b} (layer {rank[b][1]}): {e.src} -> {e.dst}"
                         f"{' (inside a function)' if e.lazy else ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package", nargs="?", default=str(root / "src" / "derta"), help="package directory [src/derta]")
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help='units per layer, lowest first: "a,b;c;d" [derta\'s own for a package named derta, else none]')
    args = p.parse_args(argv)
    pkg = Path(args.package)
    if not (pkg / "__init__.py").is_file():
        print(f"{pkg}: not a package (no __init__.py)", file=sys.stderr)
        return 2
    graph = build_graph(pkg)
    layers = parse_layers(args.layers) if args.layers else (DERTA_LAYERS if pkg.name == "derta" else [])
    problems = module_cycles(graph) + unit_cycles(graph) + (layer_violations(graph, layers) if layers else [])
    for line in problems:
        print(line)
    n_bad = sum(not line.startswith("  ") for line in problems)
    summary = f"{len(graph.modules)} modules, {len(graph.edges)} imports"
    if n_bad:
        print(f"{n_bad} problem(s) in {summary}")
        return 1
    print(f"ok: {summary}, no cycles{', no layering violations' if layers else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
