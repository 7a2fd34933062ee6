"""The package's layout is its architecture: layers, no import circles, small files.

The imports are read from the source with ``ast`` (imports inside functions count too), so a circle that
only a late import hides still fails here. The layer order is the one README.md's layout lists and
docs/architecture.md explains.
"""

import ast
from pathlib import Path

import factorvae

PACKAGE = Path(factorvae.__file__).parent
# top-level module or package -> its layer; a module may import its own package and lower layers only
LAYERS = {
    "files": 0, "kernels": 0,
    "config": 1, "data": 1, "nets": 1, "losses": 1,
    "methods": 2, "metrics": 2,
    "run": 3,
    "evaluate": 4,
    "figures": 5,
    "training": 6,
    "experiments": 7,
    "cli": 8, "__main__": 9, "__init__": 9,
}
ALIASES = {"traverse", "report", "sweep", "sweep_report"}  # old documented import paths, re-exports only


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import circle: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_each_layer_imports_only_lower_layers():
    graph = _graph()
    assert {_top(m) for m in graph} <= set(LAYERS) | ALIASES, "a new top-level module needs a layer here"
    wrong = []
    for module, deps in graph.items():
        top = _top(module)
        if top in ALIASES:
            continue
        for dep in deps:
            dep_top = _top(dep)
            if dep_top != top and (dep_top in ALIASES or LAYERS[dep_top] >= LAYERS[top]):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "; ".join(sorted(wrong))


def test_aliases_only_re_export():
    for name in ALIASES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "ImportFrom", "Assign"}, f"{name}.py defines code: {kinds}"


def test_old_documented_import_paths_are_the_new_objects():
    from factorvae.experiments.report import write_sweep_report
    from factorvae.experiments.sweep import sweep
    from factorvae.figures.report import write_report
    from factorvae.figures.traverse import write_visuals
    from factorvae.report import write_report as old_report
    from factorvae.sweep import sweep as old_sweep
    from factorvae.sweep_report import write_sweep_report as old_sweep_report
    from factorvae.traverse import write_visuals as old_visuals

    assert (old_sweep, old_report, old_visuals, old_sweep_report) == (sweep, write_report, write_visuals,
                                                                      write_sweep_report)


def test_files_and_functions_stay_small():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 400:
            too_long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}()")
    assert not too_long, "; ".join(sorted(too_long))


def test_the_public_api_is_where_the_readme_says():
    from factorvae import data, metrics

    for name in ("train", "resume", "load", "make_config", "Config", "TrainedModel"):
        assert callable(getattr(factorvae, name)), name
    assert callable(data.load)
    for name in ("factorvae_score", "betavae_score", "mig", "dci", "sap", "evaluate_metrics"):
        assert callable(getattr(metrics, name)), name
