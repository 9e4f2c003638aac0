"""The package's import layers point one way: a module imports only from its
own layer or the ones below it, so the data layer never depends on the algorithm, nor the config on
the data."""

from __future__ import annotations

import ast
from pathlib import Path

import cql_runner

ROOT = Path(cql_runner.__file__).parent

# Lowest first. A module may import from its own layer and any layer listed before it. Every module
# of the package must have a layer: a new one is placed here, where its imports allow.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "config",
            "reference_scores",
            "networks",
            "envs",
            "checkpoint",
            "preemption",
            "overrides",
            "strict_json",
            "run_lock",
            "resume_check",
            "failed_start",
            "memory_estimate",
            "thread_contention",
            "torch_threads",
            "sweep_tally",
            "data",
            "logging",
            "seeds",
        ),
    ),
    ("algorithm", ("cql", "discrete", "rollout", "video", "evaluation")),
    ("training", ("update_step", "trainer", "run", "collect", "report", "peers", "online")),
    ("entry points", ("cli", "evidence")),
]


def _layer(module: str) -> int | None:
    if module.endswith("__main__"):  # `python -m ...` scripts are entry points
        return len(LAYERS) - 1
    top = module.split(".")[0]
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    return None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cql_runner."):
            found.add(node.module.removeprefix("cql_runner."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("cql_runner.") for a in node.names if a.name.startswith("cql_runner."))
    return found


def test_imports_point_down_the_layers():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = _layer(module)
        if own is None:
            if module != "__init__":
                wrong.append(f"{module} has no layer: add it to LAYERS in tests/test_layering.py")
            continue
        for imported in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs > own:
                wrong.append(f"{module} ({LAYERS[own][0]}) imports {imported} ({LAYERS[theirs][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_data_layer_and_the_config_stand_alone():
    """The two arrows issue 16 found pointing up: data -> cql (Batch) and config -> data (the registry)."""
    for path in sorted((ROOT / "data").glob("*.py")):
        assert all(m.startswith("data.") for m in _imports(path)), path.name
    assert _imports(ROOT / "config.py") <= {"reference_scores"}
