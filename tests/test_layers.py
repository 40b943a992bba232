"""The package's dependency rule, checked on its source: each package imports only its own layer or the
layers below, training and evaluation never import each other, and data imports neither. The packages are
the layers:

    cli -> {runner, queue, cluster, report} -> {training, evaluation, data}
        -> {spec, store, system, models} -> the base modules at the top of the package

Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import heartjobs

PACKAGE = Path(heartjobs.__file__).parent
LAYERS = [
    # base: small modules every layer may use
    {"__init__", "atomic", "hashing", "errors", "choices", "records", "progress", "imaging", "grids", "plots"},
    {"spec", "store", "system", "models"},  # formats and processes
    {"training", "evaluation", "data"},  # work
    {"runner", "queue", "cluster", "report"},  # orchestration
    {"cli", "__main__"},  # interface
]
# Within the work layer, only data may be imported sideways.
FORBIDDEN = {("training", "evaluation"), ("evaluation", "training"), ("data", "training"), ("data", "evaluation")}


def _unit(module: str) -> str:
    """heartjobs.evaluation.inception -> evaluation; heartjobs -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _imports(path: Path) -> set[str]:
    """The heartjobs modules a source file imports, as absolute names (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from heartjobs import atomic` imports heartjobs.atomic; `from heartjobs import __version__`, heartjobs
            found |= {
                f"{base}.{alias.name}" if base == "heartjobs" and _is_module(alias.name) else base
                for alias in node.names
            }
    return {name for name in found if name == "heartjobs" or name.startswith("heartjobs.")}


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def _edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every heartjobs import between two units."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for imported in _imports(path):
            target = _unit(imported)
            if target != unit:
                edges.append((unit, target, str(path.relative_to(PACKAGE.parent))))
    return edges


def test_every_module_belongs_to_a_layer():
    units = {_unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    unplaced = sorted(u for u in units if not any(u in layer for layer in LAYERS))
    assert not unplaced, f"place these in a layer of tests/test_layers.py: {unplaced}"


def test_imports_go_down_the_layers_only():
    violations = [
        f"{file}: {unit} imports {target}"
        for unit, target, file in _edges()
        if _layer(target) > _layer(unit) or (unit, target) in FORBIDDEN
    ]
    assert not violations, "\n".join(violations)


def test_the_rule_catches_a_violation(tmp_path):
    # The checker itself: an upward import and a training -> evaluation import are both seen.
    source = tmp_path / "heartjobs" / "training" / "bad.py"
    source.parent.mkdir(parents=True)
    (source.parents[1] / "runner").mkdir()
    source.write_text(
        "def f():\n    from heartjobs.evaluation import inception\n    from heartjobs.runner import lifecycle\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "heartjobs"
    try:
        assert _imports(source) == {"heartjobs.evaluation", "heartjobs.runner"}
        assert {(u, t) for u, t, _ in _edges()} == {("training", "evaluation"), ("training", "runner")}
    finally:
        PACKAGE = saved


def test_run_folder_names_are_spelled_only_in_rundir():
    # RunDir owns the names of a run folder's files; a module that spells one itself drifts from it
    from heartjobs.store.rundir import RunDir

    names = {value for key, value in vars(RunDir).items() if key.isupper() and isinstance(value, str)}
    names |= {name.split("{")[0] for name in names if "{" in name}  # eval_progress_{key}.json: its prefix too
    not_run_files = {("eventlog.py", "samples"), ("weights.py", "checkpoints")}  # a TensorBoard tag; torch.hub's
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text())
        in_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            is_name = isinstance(node, ast.Constant) and node.value in names and id(node) not in in_fstrings
            if is_name and (path.name, node.value) not in not_run_files:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not spelled, spelled
