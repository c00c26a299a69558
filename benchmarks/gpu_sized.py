"""`make run-gpu`'s brackets configuration, trained by the pipeline's own code (`pipeline.train.train`, seed 1)
on the `brackets` task and scored on its test split: at full size where JAX sees a GPU, and at a fraction of
its samples per epoch on a CPU, the same code path at a size a CPU trains in minutes.

    python -m benchmarks.gpu_sized [--scale 0.025]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

import yaml

from benchmarks.backends import PROJECT

EXPERIMENT = "brackets-transformer"


def gpu_settings() -> list[tuple[str, object]]:
    """`make run-gpu`'s -S settings, as (key, value)."""
    printed = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "run-gpu"],
                             cwd=PROJECT, capture_output=True, text=True, timeout=60, check=True).stdout
    return [(key, yaml.safe_load(value)) for key, value in
            (setting.split("=", 1) for setting in re.findall(r"-S '([^']+)'", printed))]


def gpu_sized_params(scale: float):
    """params.yaml with the GPU settings applied as DVC applies them, samples per epoch times scale."""
    from pipeline.config import parse_params

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for key, value in gpu_settings():
        *parents, last = key.split(".")
        node = raw
        for parent in parents:
            node = node[parent]
        node[last] = round(value * scale) if last == "samples_per_epoch" else value
    return parse_params(raw)


def bench_gpu_sized(scale: float) -> list[str]:
    """A table row: where it trained, the budget, training seconds and test exact match."""
    from pipeline import backend, device

    backend.use("jax")
    from pipeline.evaluate import predict_worked
    from pipeline.problems import split_problems
    from pipeline.train import train

    params = gpu_sized_params(scale)
    exp = params.experiment(EXPERIMENT)
    task = params.tasks[exp.task]
    splits = split_problems(task, params.seed)
    started = time.perf_counter()
    trained = train(exp, task, splits["train"], splits["val"], seed=1)
    seconds = time.perf_counter() - started
    answers, _ = predict_worked(trained.model, trained.codec, splits["test"].text)
    exact = float((answers == splits["test"].answer.astype(str)).mean())
    return ["| device | blocks × width, batch, rate | epochs × samples | training problems | training s | "
            "test exact match |",
            "|---|---|---|---|---|---|",
            f"| {device.current().summary} | {len(exp.units)} × {exp.units[0]}, {exp.batch_size}, "
            f"{exp.learning_rate} | {exp.epochs} × {exp.samples_per_epoch:,} | {task.train_size:,} | {seconds:.0f} "
            f"({trained.train_seconds:.0f} fitting) | {exact:.2%} ({len(splits['test']):,} problems) |"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_sized", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="samples per epoch times this (default 1)")
    print("\n".join(bench_gpu_sized(parser.parse_args().scale)))


if __name__ == "__main__":
    main()
