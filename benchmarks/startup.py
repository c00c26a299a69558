"""What a command costs beyond its own work: fresh processes (ADDER_WARM=0) against forks of the warm
process (ADDER_WARM=1), and the share of a whole `dvc repro` on the defaults spent outside fitting."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.backends import BIN, PROJECT, command_env, measured, project_copy

MODES = {"fresh process": "0", "warm fork": "1"}


def bench_startup(repeats: int = 3) -> list[str]:
    """Medians of `repeats` runs of each command, in each mode; the warm server is started (by a first,
    uncounted command) before its figures."""
    if not (PROJECT / "data" / "add3" / "train.csv").is_file():
        return ["Needs the add3 data: run `make run` (or `dvc repro generate@add3`) first."]
    backend = yaml.safe_load((PROJECT / "params.yaml").read_text())["backend"]
    figures = {}
    sockets = tempfile.mkdtemp(prefix="adder-bench-", dir="/tmp")  # short: a socket path has <= 107 bytes
    try:
        for mode, warm in MODES.items():
            print(f"start-up: {mode} ...", flush=True)
            env = command_env(warm, sockets)
            with tempfile.TemporaryDirectory(prefix="adder-bench-") as tmp:
                folder = project_copy(Path(tmp), backend)
                train = [str(BIN / "adder"), "train", "add3-digitwise"]
                predict = [str(BIN / "adder"), "predict", "123+456", "--model", "add3-digitwise"]
                measured(train, env, folder)  # the model predict needs; in warm mode, starts the server
                generates = [measured([str(BIN / "adder"), "generate", "add3"], env, folder)[0] for _ in range(repeats)]
                overheads = []
                for _ in range(repeats):
                    wall = measured(train, env, folder)[0]
                    overheads.append(wall - fitting_seconds(folder / "models" / "add3-digitwise"))
                predicts = [measured(predict, env, folder) for _ in range(repeats)]
            figures[mode] = {
                "`adder generate add3` wall (s)": statistics.median(generates),
                "`adder train add3-digitwise` wall minus fitting (s)": statistics.median(overheads),
                "`adder predict 123+456` wall (s)": statistics.median(p[0] for p in predicts),
                "`adder predict 123+456` caller's peak memory (MB)": statistics.median(p[1] for p in predicts),
            }
        server = subprocess.run(["pgrep", "-o", "-f", f"pipeline.warm {sockets}"], capture_output=True, text=True)
        resident = next((int(line.split()[1]) / 1024 for line in Path(f"/proc/{server.stdout.strip()}/status")
                         .read_text().splitlines() if line.startswith("VmRSS")), 0.0) if server.stdout.strip() else 0.0
    finally:
        subprocess.run(["pkill", "-f", f"pipeline.warm {sockets}"])
        shutil.rmtree(sockets, ignore_errors=True)
    fresh, warm = figures.values()
    rows = [f"Backend {backend}; median of {repeats} runs per figure. The warm server itself holds {resident:,.0f} MB "
            "(shared with its forks), which a fresh process would load each time.\n",
            "| figure | fresh process | warm fork | ratio |", "|---|---|---|---|"]
    rows += [f"| {name} | {fresh[name]:,.2f} | {warm[name]:,.2f} | {fresh[name] / warm[name]:.1f}x less |"
             for name in fresh]
    return rows


def bench_make_run() -> list[str]:
    """`dvc repro` on the defaults in a copy of the project with an empty store, as `make run` (warm)
    runs it: wall time, the sum of the models' fitting seconds, and the share of the wall time that is
    neither (start-up, data, scoring, logging)."""
    with tempfile.TemporaryDirectory(prefix="adder-run-") as tmp:
        copy = Path(tmp) / "adder"
        files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, text=True).stdout
        for name in filter(None, files.split("\0")):
            if (PROJECT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT / name, copy / name)
        for generated in ("dvc.lock", "metrics", "plots"):
            path = copy / generated
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        subprocess.run([*git, "init", "-q"], cwd=copy, check=True)
        subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], cwd=copy, check=True)
        sockets = tempfile.mkdtemp(prefix="adder-bench-", dir="/tmp")
        print("make run: dvc repro on the defaults ...", flush=True)
        started = time.perf_counter()
        try:
            subprocess.run([str(BIN / "dvc"), "repro"], cwd=copy, env=command_env("1", sockets), check=True,
                           stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(["pkill", "-f", f"pipeline.warm {sockets}"])
            shutil.rmtree(sockets, ignore_errors=True)
        wall = time.perf_counter() - started
        experiments = [folder for folder in (copy / "models").iterdir() if (folder / "run.json").is_file()]
        fitting = sum(fitting_seconds(folder) for folder in experiments)
        experiments = len(experiments)
    return ["| figure | value |", "|---|---|",
            f"| wall time | {wall:,.0f} s |",
            f"| fitting ({experiments} experiments) | {fitting:,.0f} s |",
            f"| overhead share (wall minus fitting, over wall) | {(wall - fitting) / wall:.0%} |"]


def fitting_seconds(folder: Path) -> float:
    """An experiment's fitting seconds: every seed's, where it trained several (models/<exp>/seeds/<seed>/)."""
    runs = sorted(folder.glob("seeds/*/run.json")) or [folder / "run.json"]
    return sum(json.loads(run.read_text())["train_seconds"] for run in runs)


if __name__ == "__main__":
    print("\n".join(bench_startup()))
    if "--make-run" in sys.argv:
        print("\n".join(bench_make_run()))
