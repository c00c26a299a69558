"""The DVC stages, one module each: read inputs, call the pure code, write outputs, track them in MLflow.

dvc.yaml runs them as `python3 -m pipeline.stages.<stage>`, which under `dvc exp run` from a shell without the
project's venv on PATH is a Python without adder's dependencies: the stage then runs itself again with the
venv's Python (.venv/bin/python beside this package), or says in one line how to install them.
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


in_project_python()
