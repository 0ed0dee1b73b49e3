"""The package's imports flow one way (README "Layout"): no cycles, no imports hidden in functions.

(benchmarks/, beside tools/, is not part of the package: it imports se_detectron from above.)

Reads every module's ``import`` statements with ``ast`` (nothing is imported), both at module level
and inside functions, and checks them against the layer order below.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "se_detectron"

# Lower layers first; a module may import from its own layer's packages only as listed.
LAYERS = [
    {"errors", "config", "utils", "layers", "version"},
    {"modeling"},
    {"data", "evaluation", "checkpoint"},
    {"engine", "pretrain", "model_zoo", "export", "convert"},
    # configs: the shipped LazyConfig .py files (loaded by LazyConfig.load, they import the rest)
    {"demo", "analysis", "configs", "__main__", "(root)"},
]
# imports within a layer that are part of the design (the higher package uses the lower one)
SAME_LAYER = {
    ("config", "errors"),
    ("utils", "errors"),
    ("engine", "checkpoint"),
    ("export", "checkpoint"),
    ("model_zoo", "checkpoint"),
}
# se_detectron.checkpoint still answers the names that moved to se_detectron.convert (a
# module-level __getattr__ that imports it on first access, with a DeprecationWarning): not an
# import statement, so not part of this graph, but an upward reference the design accepts.


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports():
    """(module, imported module, is inside a function) for every se_detectron import."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda))]
        local = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: None if is_package else -1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                if not node.module:  # "from . import x": x is a module
                    targets = [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t == "se_detectron" or t.startswith("se_detectron."):
                    out.append((module, t, id(node) in local))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def _layer(package: str) -> int:
    (index,) = [i for i, layer in enumerate(LAYERS) if package in layer]
    return index


def test_every_package_has_a_layer():
    packages = {_package(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages <= set().union(*LAYERS), packages - set().union(*LAYERS)


def test_imports_flow_down():
    wrong = []
    for module, target, _ in _imports():
        a, b = _package(module), _package(target)
        if a == b or (a, b) in SAME_LAYER:
            continue
        if _layer(b) >= _layer(a):
            wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that go up or sideways: " + "; ".join(wrong)


def test_no_function_local_package_imports():
    hidden = [f"{m} -> {t}" for m, t, local in _imports() if local and _package(m) != _package(t)]
    assert not hidden, "imports hidden in functions: " + "; ".join(hidden)


def test_no_module_cycles():
    graph = {}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for module, target, _ in _imports():
        # "from .x import name": name may be a function; the module is the longest known prefix
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        if target != module and not module.startswith(target + "."):  # a package's own parents
            graph.setdefault(module, set()).add(target)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(cycles)
