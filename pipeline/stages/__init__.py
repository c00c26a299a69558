"""The DVC stages, one module each: read inputs, call the pure code, write outputs, track them in MLflow.

dvc.yaml runs them as `python3 -m pipeline.stages.<stage>`, which under `dvc exp run` from a shell without the
project's venv on PATH is a Python without adder's dependencies: the stage then runs itself again with the
venv's Python (.venv/bin/python beside this package), or says in one line how to install them. It is handed
to the warm process here (pipeline/warm.py), before the stage's module imports MLflow and pandas: over a second
a stage, which the warm process has imported already.
"""

import importlib.util
import os
import sys
from pathlib import Path

NEEDED = ("keras", "mlflow", "pydantic")


def in_project_python() -> None:
    """Returns where adder's dependencies import; else execs the venv's Python on the same command, or exits."""
    if all(importlib.util.find_spec(name) for name in NEEDED):
        return
    venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    if venv.is_file() and os.environ.get("ADDER_STAGE_PYTHON") is None and hasattr(sys, "orig_argv"):
        os.environ["ADDER_STAGE_PYTHON"] = str(venv)  # once: a venv without them must not loop
        os.execv(venv, [str(venv), *sys.orig_argv[1:]])
    print(f"error: {sys.executable} lacks adder's dependencies ({', '.join(NEEDED)}); run `make setup` and "
          "activate .venv (source .venv/bin/activate), or use `make run`", file=sys.stderr)
    sys.exit(2)


def hand_off_early() -> None:
    """While Python imports the module `python3 -m pipeline.stages.<stage>` names (sys.argv[0] is then "-m"),
    the stage goes to the warm process, if one serves or starts."""
    if sys.argv[:1] != ["-m"]:
        return
    entry = sys.orig_argv[sys.orig_argv.index("-m") + 1]
    from pipeline.command import hand_off

    hand_off([str(Path(__file__).with_name(entry.rpartition(".")[2] + ".py")), *sys.argv[1:]], entry)


in_project_python()
hand_off_early()
