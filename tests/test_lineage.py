"""dvc.yaml's code deps are exactly the modules each stage runs, derived from the code itself.

A stage's command is `adder <verb> ...`: it runs pipeline/cli.py, the imports inside that verb's
function, and, transitively, every pipeline module those import (module-level or inside functions,
since any of them may run). A module missing from a stage's deps would let `dvc status` call stale
outputs current; one too many would retrain for nothing.

`main()`'s hand-off to a warm process (pipeline/warm.py, with ADDER_WARM=1) is not a stage's code: the
same command then runs in a fork of a process that has only imported the libraries, and computes the same
outputs (tests/test_warm.py), as the Python interpreter and the installed libraries do not count either.
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


def closure(start: set[str]) -> set[Path]:
    """Every pipeline module reachable from start through imports anywhere in each module."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported(ast.walk(ast.parse(module_file(name).read_text()))))
    return {module_file(name).relative_to(PROJECT) for name in seen}


def command_modules(verb: str) -> set[Path]:
    """The modules `adder <verb>` runs: cli.py's own imports plus those inside the verb's function."""
    tree = ast.parse((PROJECT / PACKAGE / "cli.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert verb in functions, f"pipeline/cli.py has no command function {verb!r}"
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    # cli.py itself runs, but only the verb's function: its other commands' imports do not.
    return {Path(PACKAGE, "cli.py")} | closure(imported(top_level) | imported(ast.walk(functions[verb])))


def stage_code_deps() -> dict[str, tuple[str, set[Path]]]:
    """{stage: (verb, the pipeline/*.py files dvc.yaml declares as its deps)}."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[0] == "adder", f"stage {name} does not run an adder command: {body['cmd']}"
        found[name] = (words[1].replace("-", "_"),
                       {Path(d) for d in body.get("deps", []) if str(d).startswith(f"{PACKAGE}/")})
    return found


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_stage_deps_are_the_code_it_runs(stage):
    verb, declared = stage_code_deps()[stage]
    runs = command_modules(verb)
    missing, extra = sorted(map(str, runs - declared)), sorted(map(str, declared - runs))
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r} (adder {verb}): add deps {missing}, remove deps {extra}")


def test_the_derivation_follows_function_level_imports():
    """The evaluate stage loads models through a function-level import of pipeline.models."""
    assert Path("pipeline/models.py") in command_modules("evaluate")
    assert Path("pipeline/report.py") not in command_modules("generate")
