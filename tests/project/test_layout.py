"""The layout rules of docs/architecture.md, checked on the source: no private name imported across modules, no
import cycle between modules, a reason beside every function-local import, modules of one job (size), and a
folder tree with a docstring per subpackage.

Everything is read with `ast` (nothing imported), so the checks see exactly what the files say.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"nfldm_sdk": ROOT / "sdk", "nfldm_training": ROOT / "training", "sim_bridge": ROOT / "sim_bridge"}
#: Modules allowed above the size guideline, with why (kernels keep their launch code beside them).
LARGE_MODULES = {
    "sim_bridge.backends.procedural.shade_kernel": "numba kernels of the procedural shader",
}
MAX_LINES = 520
#: Words one of which a comment beside a function-local import must contain (why the import is local).
LOCAL_IMPORT_REASONS = ("start-up", "startup", "optional", "cycle", "lazy", "heavy", "extra", "only when", "only if",
                        "interpreter", "gpu", "cuda", "subprocess", "fresh")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [pkg, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_pkg = MODULES[module].name == "__init__.py"
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _project_target(name: str) -> str | None:
    """The project module an import names (longest known prefix), or None for a third-party import."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in MODULES:
            return cand
    return None


def _module_level_imports(module: str, tree: ast.Module) -> set[str]:
    """Project modules imported when `module` is imported (module level, outside ``if TYPE_CHECKING``)."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    t = _project_target(a.name)
                    if t:
                        found.add(t)
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(module, node)
                for a in node.names:
                    t = _project_target(f"{src}.{a.name}") or _project_target(src)
                    if t:
                        found.add(t)
    visit(tree.body)
    found.discard(module)
    return found


TREES = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(module, node)
                if _project_target(src) is None:
                    continue
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        offenders.append(f"{MODULES[module].relative_to(ROOT)}:{node.lineno} imports {src}.{a.name}")
    assert not offenders, "private names imported across modules (make them public):\n" + "\n".join(offenders)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node of `graph` (node -> nodes it imports): Tarjan."""
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strong(v)
    return cycles


def test_cycle_finder_finds_a_known_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = {m: _module_level_imports(m, t) for m, t in TREES.items()}
    # Edges from a module to its own parent packages are implied by Python and left out.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    cycles = _cycles(graph)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_subpackages_are_layered():
    # Within a package, subpackages (and top-level modules) form a DAG: if `pipelines` imports `guidance`, nothing
    # of `guidance` imports `pipelines`, directly or through others; the folder tree then reads bottom-up as the
    # architecture (docs/architecture.md).
    graph: dict[str, set[str]] = {}
    for m, t in TREES.items():
        pkg = m.split(".")[0]
        a = ".".join(m.split(".")[:2])
        for d in _module_level_imports(m, t):
            b = ".".join(d.split(".")[:2])
            if d.startswith(pkg + ".") and a != b and "." in a:
                graph.setdefault(a, set()).add(b)
    cycles = _cycles(graph)
    assert not cycles, f"subpackages importing each other: {cycles}"


def _comment_near(lines: list[str], lineno: int, func_start: int) -> str:
    """The comments on the import's line, the lines just above it, and the function's first lines."""
    text = [lines[lineno - 1]]
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        text.append(lines[i])
        i -= 1
    # A module may give the reason once, in a comment at the top of the function.
    text.extend(lines[func_start - 1: min(len(lines), func_start + 3)])
    return " ".join(t.split("#", 1)[1] for t in text if "#" in t).lower()


def test_every_function_local_import_says_why():
    missing = []
    for module, tree in TREES.items():
        lines = MODULES[module].read_text().splitlines()
        module_reason = any(r in line.lower() for line in lines[:80] if "#" in line for r in LOCAL_IMPORT_REASONS)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    near = _comment_near(lines, node.lineno, func.lineno)
                    if not any(r in near for r in LOCAL_IMPORT_REASONS) and not module_reason:
                        missing.append(f"{MODULES[module].relative_to(ROOT)}:{node.lineno}")
    assert not missing, ("function-local imports without a comment saying why (start-up time, optional dependency, "
                         "cycle):\n" + "\n".join(sorted(set(missing))))


def test_modules_are_of_one_job_size():
    large = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    large = {m: n for m, n in large.items() if n > MAX_LINES and m not in LARGE_MODULES}
    assert not large, f"modules over {MAX_LINES} lines (split them by job; guideline ~500): {large}"


def test_every_subpackage_says_what_it_holds():
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            assert ast.get_docstring(TREES[module]), f"{path.relative_to(ROOT)} needs a docstring naming its concern"
