"""Static import graph of the workspace's own modules: cycles, function-level imports and layer contracts.

Reads every ``.py`` file under ``packages/*/src`` and ``services/*/src`` with :mod:`ast` (nothing is imported, so it
runs without the optional dependencies) and resolves each ``import`` / ``from ... import`` to the most specific
project module it names (``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``).

An import is *top-level* when it runs at module import time (module body, class bodies, ``if``/``try`` blocks at the
top); *function-level* when it sits inside a function; *type-only* when it sits under ``if TYPE_CHECKING:``.
Cycles are searched in the graph of top-level and function-level edges together: an import placed inside a function
to dodge a cycle still counts (STYLE.md section 6). Type-only edges never run and are left out.

    python tools/import_graph.py            # report; exit 1 on a cycle, a function-level project import or a
                                            # broken layer contract
    python tools/import_graph.py --json     # the same as JSON

The layer contracts are the ``CONTRACTS`` list below; ``.ci/run`` runs this before the test suite and
``tests/test_import_graph.py`` runs it inside pytest.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("infinity_service", "infinity_mlflow_server", "infinity_ray", "infinity_preference")
# Third-party packages slow to import or installed only with an extra: a project module that pulls one in (directly
# or through its own top-level imports) may be imported inside the function that needs it, like the package itself.
HEAVY = frozenset({
    "torch", "torchvision", "transformers", "tokenizers", "sentencepiece", "safetensors", "scipy", "pandas",
    "matplotlib", "ray", "mlflow", "rapidocr", "onnxruntime", "playwright", "fastapi", "uvicorn", "httpx",
})
TORCH_PACKAGES = ("bsq_tokenizer", "bitwise_ar", "infinity_eval", "infinity_shapes")
# The packages everything else builds on; the ShapesT2I demo (infinity_shapes) hangs off them, never the reverse.
CORE_PACKAGES = ("bsq_tokenizer", "bitwise_ar", "infinity_run", "infinity_data")


@dataclass(frozen=True, kw_only=True)
class Import:
    """One resolved import of a project module."""

    source: str  # importing module
    target: str  # imported project module
    path: Path
    line: int
    level: str  # "top", "function" or "type"


@dataclass(frozen=True, kw_only=True)
class Contract:
    """Imports from ``sources`` (module patterns) to ``forbidden`` (module patterns) are violations.

    ``levels`` restricts which kinds of import count; ``exceptions`` lists source patterns exempt from the contract;
    ``allowed`` lists (source, target) "file:line" keys excluded on purpose (each with the reason in a comment).
    """

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    exceptions: tuple[str, ...] = ()
    levels: tuple[str, ...] = ("top", "function")
    allowed: tuple[str, ...] = ()
    unless_free_of: frozenset[str] = frozenset()  # a target whose import loads none of these is not a violation


def _under(package: str) -> tuple[str, str]:
    """Patterns for a module and everything under it."""
    return (package, package + ".*")


CONTRACTS: tuple[Contract, ...] = (
    Contract(
        name="bsq-tokenizer imports no other project package (infinity_run only from bsq_tokenizer.train)",
        sources=_under("bsq_tokenizer"),
        forbidden=(
            *_under("bitwise_ar"),
            *_under("infinity_data"),
            *_under("infinity_eval"),
            *(p for s in SERVICES for p in _under(s)),
        ),
    ),
    Contract(
        name="bsq-tokenizer's core (outside bsq_tokenizer.train) imports neither infinity_run nor bsq_tokenizer.train",
        sources=_under("bsq_tokenizer"),
        exceptions=_under("bsq_tokenizer.train"),
        forbidden=(*_under("infinity_run"), *_under("bsq_tokenizer.train")),
    ),
    Contract(
        name="infinity_run imports no other project package",
        sources=_under("infinity_run"),
        forbidden=(
            *_under("bsq_tokenizer"),
            *_under("bitwise_ar"),
            *_under("infinity_data"),
            *_under("infinity_eval"),
            *(p for s in SERVICES for p in _under(s)),
        ),
    ),
    Contract(
        name="bitwise-ar's core (outside train/) never imports bitwise_ar.train",
        sources=_under("bitwise_ar"),
        # the CLI is the package's entry point: its `train` and `export` handlers reach the training extra lazily
        exceptions=(*_under("bitwise_ar.train"), "bitwise_ar.cli"),
        forbidden=_under("bitwise_ar.train"),
    ),
    Contract(
        name="no core package (bsq_tokenizer, bitwise_ar, infinity_run, infinity_data) imports the demo (infinity_shapes)",
        sources=tuple(p for s in CORE_PACKAGES for p in _under(s)),
        forbidden=_under("infinity_shapes"),
    ),
    Contract(
        name="infinity_data imports no torch-based project package at module top (torch-free modules such as "
        "bsq_tokenizer.schedules excepted)",
        sources=_under("infinity_data"),
        forbidden=tuple(p for s in (*TORCH_PACKAGES, "infinity_run") for p in _under(s)),
        levels=("top",),
        unless_free_of=frozenset({"torch"}),
    ),
    Contract(
        name="libraries never import services",
        sources=tuple(
            p for s in (*CORE_PACKAGES, "infinity_eval", "infinity_shapes") for p in _under(s)
        ),
        forbidden=tuple(p for s in SERVICES for p in _under(s)),
    ),
)


# Modules whose cycles and unexplained function-level imports are not counted as failures yet, each with the reason.
EXCLUDED: dict[str, str] = {
}


def _excluded(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in EXCLUDED)


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)  # module name -> file
    imports: list[Import] = field(default_factory=list)
    function_imports_total: int = 0  # every function-level import in library code, third-party ones included
    third_party: dict[str, set[str]] = field(default_factory=dict)  # module -> top-level third-party roots

    def heavy_closure(self, module: str) -> set[str]:
        """The heavy third-party packages that importing ``module`` loads (through top-level imports only)."""
        top: dict[str, set[str]] = {}
        for imp in self.imports:
            if imp.level == "top":
                top.setdefault(imp.source, set()).add(imp.target)
        seen, todo, heavy = {module}, [module], set()
        while todo:
            current = todo.pop()
            heavy |= self.third_party.get(current, set()) & HEAVY
            for nxt in top.get(current, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return heavy


def source_roots(repo: Path = REPO) -> list[Path]:
    """The ``src`` directories of every workspace member."""
    return sorted(p for p in (*repo.glob("packages/*/src"), *repo.glob("services/*/src")) if p.is_dir())


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _walk(node: ast.AST, level: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import under ``node`` with its level: top, function or type (under ``if TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, level
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, "function" if level == "top" else level)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), "type")
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), level)
        else:
            yield from _walk(child, level)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterable[str]:
    """The project modules an import names (nothing for third-party and standard-library imports)."""

    def most_specific(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                return candidate
        return None

    if isinstance(node, ast.Import):
        for alias in node.names:
            target = most_specific(alias.name)
            if target is not None:
                yield target
        return
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:
        target = most_specific(f"{base}.{alias.name}") if alias.name != "*" else None
        target = target or most_specific(base)
        if target is not None:
            yield target


def build_graph(roots: Iterable[Path]) -> Graph:
    graph = Graph()
    files: list[tuple[str, Path]] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            name = module_name(root, path)
            graph.modules[name] = path
            files.append((name, path))
    known = set(graph.modules)
    for name, path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, level in _walk(tree, "top"):
            if level == "function":
                graph.function_imports_total += 1
            if level == "top" and not (isinstance(node, ast.ImportFrom) and node.level):
                roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                graph.third_party.setdefault(name, set()).update(r.split(".")[0] for r in roots)
            seen: set[str] = set()
            for target in _resolve(name, is_package, node, known):
                if target == name or target in seen:
                    continue
                seen.add(target)
                graph.imports.append(Import(source=name, target=target, path=path, line=node.lineno, level=level))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    for imp in graph.imports:
        if imp.level != "type":
            edges[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative Tarjan: deep packages must not hit the recursion limit
        nonlocal counter
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found)


def _matches(module: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in patterns)


def violations(graph: Graph, contract: Contract, repo: Path = REPO) -> list[Import]:
    bad = []
    for imp in graph.imports:
        if imp.level not in contract.levels:
            continue
        if not _matches(imp.source, contract.sources) or _matches(imp.source, contract.exceptions):
            continue
        if not _matches(imp.target, contract.forbidden):
            continue
        if f"{imp.path.relative_to(repo)}:{imp.line}" in contract.allowed:
            continue
        if contract.unless_free_of and not (graph.heavy_closure(imp.target) & contract.unless_free_of):
            continue
        bad.append(imp)
    return bad


def is_entry_point(module: str) -> bool:
    """CLI modules (``*.cli``, ``*.__main__``) defer the library they dispatch to, so ``--help`` stays fast."""
    return module.rsplit(".", 1)[-1] in ("cli", "__main__")


def core_dependencies(graph: Graph, package: str) -> set[str]:
    """Import names of the project packages that ``package``'s distribution requires (not only through an extra)."""
    path = graph.modules.get(package)
    if path is None:
        return set()
    pyproject = path.parents[2] / "pyproject.toml"  # <member>/src/<package>/__init__.py
    if not pyproject.is_file():
        return set()
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("dependencies", [])
    return {re.split(r"[^A-Za-z0-9_.-]", d, maxsplit=1)[0].replace("-", "_").lower() for d in deps}


def classify(graph: Graph, imp: Import) -> str:
    """Why a function-level project import is there: ``entry point``, ``optional <package>`` (a project package the
    importer's distribution has only as an extra), ``defers <heavy packages>``, or ``no reason``."""
    if is_entry_point(imp.source):
        return "entry point"
    source_package, target_package = imp.source.split(".")[0], imp.target.split(".")[0]
    if source_package != target_package and target_package not in core_dependencies(graph, source_package):
        return f"optional {target_package}"
    heavy = graph.heavy_closure(imp.target)
    if heavy:
        return "defers " + ",".join(sorted(heavy))
    return "no reason"


def report(repo: Path = REPO) -> dict:
    graph = build_graph(source_roots(repo))
    function_level = [imp for imp in graph.imports if imp.level == "function"]

    def where(imp: Import) -> str:
        return f"{imp.path.relative_to(repo)}:{imp.line} {imp.source} -> {imp.target}"

    reasons = {where(i): classify(graph, i) for i in function_level}
    found_cycles = cycles(graph)
    return {
        "modules": len(graph.modules),
        "cycles": found_cycles,
        "cycles_not_excluded": [c for c in found_cycles if not all(_excluded(m) for m in c)],
        "function_level_imports": graph.function_imports_total,
        "function_level_project_imports": reasons,
        "unjustified_function_level_project_imports": [
            w for w, why in reasons.items() if why == "no reason" and not _excluded(w.split()[1])
        ],
        "contracts": {c.name: [where(i) for i in violations(graph, c, repo)] for c in CONTRACTS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every function-level project import")
    args = parser.parse_args(argv)
    result = report(args.repo)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['modules']} modules")
        print(f"import cycles: {len(result['cycles'])}")
        for component in result["cycles"]:
            print("  " + " <-> ".join(component))
        project = result["function_level_project_imports"]
        print(f"function-level imports in library code: {result['function_level_imports']}, of project modules: {len(project)}")
        by_reason: dict[str, int] = {}
        for why in project.values():
            key = why.split()[0] if why.startswith(("defers", "optional")) else why
            by_reason[key] = by_reason.get(key, 0) + 1
        for key, count in sorted(by_reason.items()):
            print(f"  {key}: {count}")
        if args.verbose:
            for line, why in project.items():
                print(f"    {line}  [{why}]")
        unjustified = result["unjustified_function_level_project_imports"]
        print(f"function-level project imports with no reason (outside the exclusions): {len(unjustified)}")
        for line in unjustified:
            print("  " + line)
        for module, why in EXCLUDED.items():
            print(f"excluded for now: {module}: {why}")
        for name, bad in result["contracts"].items():
            print(f"contract {'KEPT' if not bad else 'BROKEN'}: {name}")
            for line in bad:
                print("  " + line)
    broken = (
        result["cycles_not_excluded"]
        or result["unjustified_function_level_project_imports"]
        or any(result["contracts"].values())
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
