"""The same Keras models on each backend, and the start-up a user waits for: each figure from fresh
processes (a backend is fixed per process), the median of a few, as ratios against TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BACKENDS = ("tensorflow", "jax")


def command_env(warm: str, sockets: str | None = None) -> dict:
    """The environment of a measured `adder` command: .venv's programs first, none of the caller's MLflow,
    Keras or adder settings, ADDER_WARM as given and, for warm forks, the folder of their server's socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KERAS_", "ADDER_"))}
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "ADDER_WARM": warm}
    return {**env, "TMPDIR": sockets} if sockets else env


# Steady-state seconds per epoch of 10,000 3-digit problems, batch 128: the last epoch of three.
EPOCHS = textwrap.dedent("""
    import json, sys
    from pipeline.config import Experiment, Task
    from pipeline.problems import split_problems
    from pipeline.train import train
    task = Task(terms=2, digits=3, train_size=10000, val_size=500, test_size=1)
    splits = split_problems(task, 0)
    out = {}
    for name, settings in (("digitwise", dict(units=(32,))), ("transformer", dict(units=(64, 64)))):
        exp = Experiment(task="t", model=name, epochs=3, samples_per_epoch=10000, batch_size=128, **settings)
        seconds = [e["seconds"] for e in train(exp, task, splits["train"], splits["val"], seed=1).history]
        out[name] = seconds[-1] - seconds[-2]
    print(json.dumps(out))
""")


# Runs a command and records its wall seconds, peak resident memory and exit status. Linux counts a forked
# child's memory before its exec in its peak, so the command is forked from this small process rather than
# from the benchmark, which by then holds trained models (a gigabyte).
LAUNCHER = textwrap.dedent("""
    import json, os, sys, time
    record, args = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.posix_spawn(args[0], args, os.environ)
    _, status, usage = os.wait4(pid, 0)
    with open(record, "w") as f:
        json.dump({"seconds": time.perf_counter() - started, "mb": usage.ru_maxrss / 1024,
                   "status": os.waitstatus_to_exitcode(status)}, f)
""")


def measured(args: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Runs a command (args[0] a path); returns its wall seconds, its own peak resident memory (MB) and
    its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as record:
        subprocess.run([sys.executable, "-c", LAUNCHER, record.name, *args], cwd=cwd, env=env, stdout=out,
                       stderr=err, check=True)
        figures = json.loads(Path(record.name).read_text())
        out.seek(0), err.seek(0)
        if figures["status"] != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{err.read()[-2000:]}")
        return figures["seconds"], figures["mb"], out.read()


def project_copy(folder: Path, backend: str) -> Path:
    """A project with the default params on `backend` and add3's data, so `adder` runs there alone."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["backend"] = backend
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(PROJECT / "data" / "add3", folder / "data" / "add3")
    return folder


def bench_backends(repeats: int = 3) -> list[str]:
    if not (PROJECT / "data" / "add3" / "train.csv").is_file():
        return ["Needs the add3 data: run `make run` (or `dvc repro generate@add3`) first."]
    env = command_env("0")  # fresh processes, as the figures say, even under `make bench` (which sets it to 1)
    figures = {}
    for backend in BACKENDS:
        print(f"backend {backend} ...", flush=True)
        run_env = {**env, "KERAS_BACKEND": backend}
        with tempfile.TemporaryDirectory(prefix="adder-bench-") as tmp:
            folder = project_copy(Path(tmp), backend)
            imports = [measured([sys.executable, "-c", "import keras"], run_env, folder)[0] for _ in range(repeats)]
            epochs = json.loads(measured([sys.executable, "-c", EPOCHS], run_env, PROJECT)[2].strip().splitlines()[-1])
            overheads = []
            for _ in range(repeats):
                wall, _, out = measured([str(BIN / "adder"), "train", "add3-digitwise"], run_env, folder)
                fit = json.loads((folder / "models" / "add3-digitwise" / "run.json").read_text())["train_seconds"]
                overheads.append(wall - fit)
            predicts = [measured([str(BIN / "adder"), "predict", "123+456", "--model", "add3-digitwise"],
                                 run_env, folder)
                        for _ in range(repeats)]
        figures[backend] = {
            "import keras (s)": statistics.median(imports),
            "digitwise LSTM(32) epoch (s)": epochs["digitwise"],
            "2+2-block transformer epoch (s)": epochs["transformer"],
            "`adder train add3-digitwise`: wall minus fitting (s)": statistics.median(overheads),
            "`adder predict 123+456` wall (s)": statistics.median(p[0] for p in predicts),
            "`adder predict 123+456` peak memory (MB)": statistics.median(p[1] for p in predicts),
        }
    rows = [f"Median of {repeats} fresh processes per figure; epochs of 10,000 3-digit problems, batch 128.\n",
            "| figure | tensorflow | jax | jax vs tensorflow |", "|---|---|---|---|"]
    for name in figures["jax"]:
        tf, jax = figures["tensorflow"][name], figures["jax"][name]
        rows.append(f"| {name} | {tf:,.2f} | {jax:,.2f} | {tf / jax:.1f}x {'less' if 'MB' in name else 'faster'} |")
    return rows


if __name__ == "__main__":
    print("\n".join(bench_backends()))
