"""dvc.yaml's code deps are exactly the modules each stage runs, derived from the code itself; and an
edit stales only what it touches.

A stage's command is `python -m pipeline.stages.<stage> ...`: it runs that module and, transitively, every
pipeline module it imports (module-level or inside functions, since any of them may run). A module missing
from a stage's deps would let `dvc status` call stale outputs current; one too many would retrain for nothing.

The hand-off to a warm process (pipeline/warm.py, with ADDER_WARM=1) is not a stage's code: the same entry
then runs in a fork of a process that has only imported the libraries, and computes the same outputs
(tests/test_warm.py), as the Python interpreter and the installed libraries do not count either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


def module_file(name: str) -> Path | None:
    """pipeline.stages.train -> pipeline/stages/train.py (or .../__init__.py); None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = PROJECT / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported(nodes) -> set[str]:
    """Pipeline modules named by the import statements among nodes."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from pipeline import problems` imports the module pipeline.problems
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (f := module_file(f"{node.module}.{alias.name}")) and f.is_file())
    return {parent for name in names if module_file(name) for parent in with_parents(name)}


def closure(start: set[str], skip: set[Path] = frozenset()) -> set[Path]:
    """Every pipeline module reachable from start through imports anywhere in each module, but those in skip."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name).relative_to(PROJECT) in skip:
            continue
        seen.add(name)
        todo.extend(imported(ast.walk(ast.parse(module_file(name).read_text()))))
    return {module_file(name).relative_to(PROJECT) for name in seen}


HAND_OFF = Path(PACKAGE, "warm.py")


def stage_modules(module: str) -> set[Path]:
    """The modules `python -m <module>` runs, the warm hand-off aside."""
    return closure({*with_parents(module)}, skip={HAND_OFF})


def stage_code_deps() -> dict[str, tuple[str, set[Path]]]:
    """{stage: (the module its command runs, the pipeline/*.py files dvc.yaml declares as its deps)}."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[:2] == ["python", "-m"] and words[2].startswith(f"{PACKAGE}.stages."), (
            f"stage {name} does not run a stage module (python -m {PACKAGE}.stages.<stage>): {body['cmd']}")
        found[name] = (words[2], {Path(d) for d in body.get("deps", []) if str(d).startswith(f"{PACKAGE}/")})
    return found


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_stage_deps_are_the_code_it_runs(stage):
    module, declared = stage_code_deps()[stage]
    runs = stage_modules(module)
    missing, extra = sorted(map(str, runs - declared)), sorted(map(str, declared - runs))
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r} ({module}): add deps {missing}, remove deps {extra}")


def test_the_derivation_follows_function_level_imports():
    """The evaluate stage loads models through a function-level import of pipeline.models."""
    assert Path("pipeline/models.py") in stage_modules("pipeline.stages.evaluate")
    assert Path("pipeline/report.py") not in stage_modules("pipeline.stages.generate")


def stale_after_editing(file: str) -> list[str]:
    """The stages of dvc.yaml whose deps hold file: what `dvc status` calls stale after an edit of it."""
    return sorted(stage for stage, (_, deps) in stage_code_deps().items() if Path(file) in deps)


# What an edit of each module may make stale. Code for people (the CLI, serving, the registry, retraining
# reports, the warm process) stales no stage that generates or trains: a typo fixed costs no retraining.
BLAST_RADIUS = {
    "pipeline/cli.py": [],
    "pipeline/predict.py": [],
    "pipeline/retrain.py": [],
    "pipeline/warm.py": [],
    "pipeline/serving.py": ["evaluate"],
    "pipeline/registry.py": ["evaluate"],
    "pipeline/report.py": ["compare"],
    "pipeline/train.py": ["train"],
    "pipeline/problems.py": ["evaluate", "generate", "train"],
}


@pytest.mark.parametrize("file", sorted(BLAST_RADIUS))
def test_an_edit_stales_only_the_stages_that_run_it(file):
    assert stale_after_editing(file) == BLAST_RADIUS[file]
