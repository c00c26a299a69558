"""dvc.yaml's code deps are exactly the modules each stage runs, derived from the code itself; and an
edit stales only what it touches.

A stage's command is `python3 -m pipeline.stages.<stage> ...`: it runs that module and, transitively, every
pipeline module it imports (module-level or inside functions, since any of them may run). A module missing
from a stage's deps would let `dvc status` call stale outputs current; one too many would retrain for nothing.

A model kind's module (pipeline/kinds/<kind>.py) is imported by name, `kind(name)`: that call counts as
importing the kinds a stage can reach, which for `train@<experiment>` is the experiment's own kind alone
(dvc.yaml: `pipeline/kinds/${item.model}.py`), checked at run time by training one and listing what loaded.

The hand-off to a warm process (pipeline/warm.py, with ADDER_WARM=1) is not a stage's code: the same entry
then runs in a fork of a process that has only imported the libraries, and computes the same outputs
(tests/test_warm.py), as the Python interpreter and the installed libraries do not count either.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


KINDS = f"{PACKAGE}.kinds"
ALL_KINDS = tuple(sorted(p.stem for p in (PROJECT / PACKAGE / "kinds").glob("*.py") if p.stem != "__init__"))


def imported(nodes, kinds: tuple[str, ...] = ALL_KINDS) -> set[str]:
    """Pipeline modules named by the import statements among nodes, and by kind() calls (those of kinds)."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "kind":
            names.update(f"{KINDS}.{name}" for name in kinds)
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from pipeline import problems` imports the module pipeline.problems
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (f := module_file(f"{node.module}.{alias.name}")) and f.is_file())
    return {parent for name in names if module_file(name) for parent in with_parents(name)}


def closure(start: set[str], skip: set[Path] = frozenset(), kinds: tuple[str, ...] = ALL_KINDS) -> set[Path]:
    """Every pipeline module reachable from start through imports anywhere in each module (kind() reaching
    those of kinds), but those in skip."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name).relative_to(PROJECT) in skip:
            continue
        seen.add(name)
        todo.extend(imported(ast.walk(ast.parse(module_file(name).read_text())), kinds))
    return {module_file(name).relative_to(PROJECT) for name in seen}


HAND_OFF = Path(PACKAGE, "warm.py")


def stage_modules(module: str, kinds: tuple[str, ...] = ALL_KINDS) -> set[Path]:
    """The modules `python -m <module>` runs (kind() loading those of kinds), the warm hand-off aside."""
    return closure({*with_parents(module)}, skip={HAND_OFF}, kinds=kinds)


FINGERPRINT = "fingerprint-"  # fingerprint-<stage>: the modules a kind of stage runs, as one dep of each of its stages
OWN_CODE = f"{PACKAGE}/stages/fingerprint.py"  # what a fingerprint stage runs, not what it covers


def stage_code_deps() -> dict[str, tuple[str, list[str]]]:
    """{stage: (the module its command runs, the pipeline/*.py deps dvc.yaml declares, as written)}. A dep on
    fingerprints/<stage>.json counts as the modules its fingerprint-<stage> stage covers."""
    stages = {name: stage.get("do", stage) for name, stage in
              yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].items()}
    found = {}
    for name, body in stages.items():
        words = body["cmd"].split()
        assert words[:2] == ["python3", "-m"] and words[2].startswith(f"{PACKAGE}.stages."), (
            f"stage {name} does not run a stage module (python3 -m {PACKAGE}.stages.<stage>): {body['cmd']}")
        deps = []
        for dep in map(str, body.get("deps", [])):
            if dep.startswith("fingerprints/"):
                deps += [d for d in stages[FINGERPRINT + Path(dep).stem]["deps"] if d != OWN_CODE]
            elif dep.startswith(f"{PACKAGE}/"):
                deps.append(dep)
        found[name] = (words[2], deps)
    return found


def experiments() -> dict[str, str]:
    """{experiment: its model kind} in params.yaml."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    return {name: exp["model"] for name, exp in params["experiments"].items()}


def declared(stage: str, model: str | None = None) -> set[Path]:
    """The stage's deps, with ${item.model} as `model` (train's deps are per experiment)."""
    return {Path(dep.replace("${item.model}", model or "")) for dep in stage_code_deps()[stage][1]}


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_stage_deps_are_the_code_it_runs(stage):
    module, _ = stage_code_deps()[stage]
    runs = {None: (stage_modules(module), declared(stage))}
    if stage == "train":  # each experiment's training reaches its own kind alone
        runs = {name: (stage_modules(module, (model,)), declared(stage, model))
                for name, model in experiments().items()}
    if stage.startswith(FINGERPRINT):  # its own code; the modules it covers are checked with their stages
        runs = {None: (stage_modules(module), declared(stage) & stage_modules(module))}
    for experiment, (needed, listed) in runs.items():
        missing, extra = sorted(map(str, needed - listed)), sorted(map(str, listed - needed))
        assert not missing and not extra, (
            f"dvc.yaml stage {stage!r} ({module}, {experiment or 'every experiment'}): add deps {missing}, "
            f"remove deps {extra}")


def test_a_training_loads_no_other_kind(tmp_path):
    """kind() at run time: training a digit-column model and a transformer (a few steps each, in a fresh
    process) imports the module of its own kind and no other."""
    script = """
import sys
from pipeline.config import Experiment, Task
from pipeline.problems import split_problems
from pipeline.train import train
kind = sys.argv[1]
task = Task(terms=2, digits=2, train_size=64, val_size=16, test_size=16)
exp = Experiment(task="t", model=kind, units=[8] if kind == "digitwise" else [8, 8], epochs=1,
                 samples_per_epoch=32, batch_size=16)
splits = split_problems(task, 1)
train(exp, task, splits["train"], splits["val"], seed=1)
print(sorted(m for m in sys.modules if m.startswith("pipeline.kinds.")))
"""
    for model in ("digitwise", "transformer"):
        result = subprocess.run([sys.executable, "-c", script, model], cwd=PROJECT, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "KERAS_BACKEND": "jax"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == str([f"{KINDS}.{model}"]), result.stdout


def test_the_derivation_follows_function_level_imports():
    """The evaluate stage loads models through a function-level import of pipeline.models."""
    assert Path("pipeline/model_folder.py") in stage_modules("pipeline.stages.evaluate")
    assert Path("pipeline/report.py") not in stage_modules("pipeline.stages.generate")


def stale_after_editing(file: str) -> list[str]:
    """The stages of dvc.yaml whose deps hold file (train@ and evaluate@<experiment> one by one): what `dvc
    status` calls stale after an edit of it."""
    stale = [f"train@{name}" for name, model in experiments().items() if Path(file) in declared("train", model)]
    if Path(file) in declared("evaluate"):
        stale += [f"evaluate@{name}" for name in experiments()]
    return sorted([stage for stage in stage_code_deps() if stage not in ("train", "evaluate")
                   and not stage.startswith(FINGERPRINT) and Path(file) in declared(stage)] + stale)


# What an edit of each module may make stale. Code for people (the CLI, serving, the registry, retraining
# reports, the warm process) stales no stage that generates or trains: a typo fixed costs no retraining.
# A model kind's module stales the trainings of that kind, and every evaluate (a model of any kind loads
# with the transformer's layers registered).
EVERY_TRAINING = "every train@"
EVERY_EVALUATE = "every evaluate@"
BLAST_RADIUS = {
    "pipeline/cli.py": [],
    "pipeline/predict.py": [],
    "pipeline/retrain.py": [],
    "pipeline/warm.py": [],
    "pipeline/server.py": [],
    "pipeline/serving.py": [EVERY_EVALUATE],
    "pipeline/registry.py": [EVERY_EVALUATE],
    "pipeline/report.py": ["compare"],
    "pipeline/figures.py": [EVERY_EVALUATE, "compare"],
    "pipeline/train.py": [EVERY_TRAINING],
    "pipeline/device.py": [EVERY_TRAINING],
    "pipeline/problems.py": [EVERY_TRAINING, EVERY_EVALUATE, "generate"],
    "pipeline/kinds/transformer.py": [EVERY_EVALUATE, "train@brackets-transformer",
                                      "train@brackets-transformer-reversed", "train@brackets-transformer-rewrite",
                                      "train@ops-transformer", "train@ops-transformer-reversed"],
    "pipeline/nested.py": [EVERY_TRAINING, EVERY_EVALUATE, "generate"],
    "pipeline/rewriting.py": [EVERY_TRAINING, EVERY_EVALUATE],
    "pipeline/kinds/digitwise.py": [EVERY_EVALUATE, "train@add10-digitwise", "train@add3-digitwise",
                                    "train@terms-digitwise"],
}


@pytest.mark.parametrize("file", sorted(BLAST_RADIUS))
def test_an_edit_stales_only_the_stages_that_run_it(file):
    every = {EVERY_TRAINING: "train@", EVERY_EVALUATE: "evaluate@"}
    expected = sorted([stage for stage in BLAST_RADIUS[file] if stage not in every]
                      + [prefix + name for marker, prefix in every.items() if marker in BLAST_RADIUS[file]
                         for name in experiments()])
    assert stale_after_editing(file) == expected
