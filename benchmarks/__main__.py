"""Speed benchmarks, each printed as a ratio against a baseline measured in the same run:

  data        problem generation + encoding vs the tutorial's pure-Python generator
  training    time to 99% / 99.9% held-out exact match on 3-digit addition, vs the Keras addition_rnn setup
  predict     batch prediction throughput (problems/s) of each trained model
  backends    the same models and commands on TensorFlow and JAX: import, epoch, start-up, predict
  startup     a stage's and `adder predict`'s cost beyond their work: fresh processes vs warm forks
  make_run    `dvc repro` on the defaults: wall time, fitting seconds and the overhead share
  widths      first and later epochs of the brackets transformer: batches cut to few widths vs to many
  gpu         time to accuracy and prediction with JAX on the GPU and on the CPU, and make run-gpu's
              brackets configuration, when JAX sees a GPU

Usage: python -m benchmarks [--budget SECONDS] [--only data,training,...] [--backend jax|tensorflow]
                            [--out docs/benchmarks.md]
(or `make bench`). training and predict run on each Keras backend, each in a process of its own, unless
--backend names one.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks import backends, startup, tutorial, widths  # noqa: E402
from pipeline.codec import CharCodec, Limits  # noqa: E402
from pipeline.config import Experiment, Task  # noqa: E402
from pipeline.evaluate import exact_match, predict_answers  # noqa: E402
from pipeline.problems import sample_problems, split_problems  # noqa: E402

ADD3 = Task(terms=2, digits=3, train_size=50_000, val_size=2_000, test_size=10_000)

# The four 3-digit addition setups of the comparison; `keras` is the baseline of the ratios.
SETUPS = {
    "tutorial": ("the tutorial's seq2seq: LSTM(100)-RepeatVector-LSTM(50), 1,000 fresh samples/epoch, batch 10",
                 dict(model="seq2seq", units=(100, 50), epochs=30, samples_per_epoch=1000, batch_size=10)),
    "keras": ("Keras addition_rnn: LSTM(128)-RepeatVector-LSTM(128), reversed input, 50k questions, batch 32",
              dict(model="seq2seq", units=(128, 128), reverse=True, epochs=50, batch_size=32)),
    "char_seq2seq": ("best character-level seq2seq on raw '123+45': a 1+1-block transformer, width 64",
                     dict(model="transformer", units=(64,), epochs=20, samples_per_epoch=10000, batch_size=128,
                          learning_rate=0.002, schedule="cosine")),
    "best": ("best of any kind: digitwise LSTM(32) over digit columns",
             dict(model="digitwise", units=(32,), epochs=20, samples_per_epoch=10000, batch_size=128,
                  learning_rate=0.01, schedule="cosine")),
}


SECTIONS = ("data", "training", "predict", "backends", "startup", "make_run", "widths", "gpu")


def rate(seconds: float, n: int) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def bench_data(n_tutorial: int = 20_000, n_adder: int = 200_000, rounds: int = 5) -> list[str]:
    """Problems/s on 3-digit addition: the tutorial's pure-Python generator against the pipeline's own path,
    problems.sample_problems and then CharCodec.training_pair (the one-hot arrays training reads). Each keeps
    its fastest of `rounds` runs, the one least slowed by other work on the machine."""
    codec = CharCodec(Limits.of(ADD3))
    rng = np.random.default_rng(0)

    def adder_encoded(n):
        problems = sample_problems(ADD3, n, rng)
        return codec.training_pair(problems.text, problems.answer)

    steps = [
        ("text + exact answers", "`random_sum_pairs` + `to_string`", "`sample_problems`",
         lambda n: tutorial.to_string(*tutorial.random_sum_pairs(n, 2, 999), 2, 999),
         lambda n: sample_problems(ADD3, n, rng)),
        ("text + exact answers, one-hot encoded", "`generate_data`", "`sample_problems` + `training_pair`",
         lambda n: tutorial.generate_data(n, 2, 999, list("0123456789+ ")), adder_encoded),
    ]
    rows = [f"Best of {rounds} alternating runs: {n_tutorial:,} problems for the tutorial, {n_adder:,} for adder.\n",
            "| step | tutorial (pure Python) | problems/s | adder (numpy) | problems/s | ratio |",
            "|---|---|---|---|---|---|"]
    for step, tutorial_name, adder_name, baseline, ours in steps:
        base = fast = 0.0
        for _ in range(rounds):  # alternating, so a busy moment on the machine slows both alike
            base = max(base, rate(timed(baseline, n_tutorial)[1], n_tutorial))
            fast = max(fast, rate(timed(ours, n_adder)[1], n_adder))
        rows.append(f"| {step} | {tutorial_name} | {base:,.0f} | {adder_name} | {fast:,.0f} | {fast / base:,.0f}x |")
    return rows


def bench_training(budget: float) -> tuple[list[str], dict]:
    from pipeline.train import train

    splits = split_problems(ADD3, 1)
    rows, trained = [], {}
    for name, (label, settings) in SETUPS.items():
        # Train on past 99.9% (to a perfect validation score) so the test figure is not a lucky stop.
        exp = Experiment(task="add3", target=1.0, max_seconds=budget, **settings)
        print(f"training {name}: {label} (budget {budget:.0f}s)", flush=True)
        result = train(exp, ADD3, splits["train"], splits["val"], seed=1)
        test = exact_match(predict_answers(result.model, result.codec, splits["test"].text), splits["test"].answer)
        trained[name] = result
        rows.append((name, label, result.seconds_to.get("seconds_to_99"), result.seconds_to.get("seconds_to_99_9"),
                     result.train_seconds, test))
    base = dict((r[0], r) for r in rows)["keras"][2]
    shown = lambda s: "not reached" if s is None else f"{s:.0f}"
    ratio = lambda s: "–" if s is None or base is None else f"{base / s:.1f}x faster"
    table = ["| setup | seconds to 99% | seconds to 99.9% | vs Keras to 99% (99% / 99.9%) | trained s "
             "| test exact match |",
             "|---|---|---|---|---|---|"]
    for name, label, s99, s999, total, test in rows:
        table.append(f"| **{name}**: {label} | {shown(s99)} | {shown(s999)} | {ratio(s99)} / {ratio(s999)} | "
                     f"{total:.0f} | {test:.2%} |")
    if base is None:
        table.append(f"\nThe Keras setup did not reach 99% within the {budget:.0f}s budget, so no ratio can be given.")
    return table, trained


def bench_predict(trained: dict, n: int = 20_000) -> list[str]:
    texts = sample_problems(ADD3, n, np.random.default_rng(2)).text
    speeds = {}
    for name, result in trained.items():
        predict_answers(result.model, result.codec, texts)  # warm-up: compiles every batch size timed below
        _, seconds = timed(predict_answers, result.model, result.codec, texts)
        speeds[name] = rate(seconds, n)
    table = ["| model | problems/s | vs Keras setup |", "|---|---|---|"]
    table += [f"| {name} | {speed:,.0f} | {speed / speeds['keras']:.1f}x |" for name, speed in speeds.items()]
    return table


def accuracy_sections(only: set[str], budget: float, backend: str) -> list[str]:
    """Time to accuracy and batch prediction, in this process, whose Keras runs on backend."""
    from pipeline import device

    training, trained = bench_training(budget)
    where = device.current().summary
    sections = [f"## Time to accuracy on {backend}, {where} (3-digit addition, held-out exact match on 2,000 "
                "validation problems)\n", "Timed by a training callback from the first step, validation included; "
                "training goes on to a perfect validation score, its epochs or the budget.\n", *training, ""]
    if "predict" in only:
        print("prediction ...", flush=True)
        sections += [f"## Batch prediction on {backend}, {where} (20,000 3-digit problems: encode, predict, decode)\n",
                     *bench_predict(trained), ""]
    return sections


def on_backend(only: set[str], budget: float, backend: str, platform: str | None = None) -> list[str]:
    """accuracy_sections in a fresh process on backend (a process imports one Keras backend); with platform,
    JAX computes on that one ('cpu' or 'cuda')."""
    print(f"time to accuracy and prediction on {backend} {platform or ''}...", flush=True)
    env = {**os.environ, **({"JAX_PLATFORMS": platform} if platform else {})}
    with tempfile.NamedTemporaryFile("r", suffix=".md") as out:
        subprocess.run([sys.executable, "-m", "benchmarks", "--only", ",".join(sorted(only)), "--budget", str(budget),
                        "--backend", backend, "--out", out.name], check=True, stdout=subprocess.DEVNULL, env=env)
        report = Path(out.name).read_text()
    return report[report.index("## "):].rstrip("\n").split("\n") + [""]


def visible_gpu() -> tuple[str | None, str]:
    """(the GPU JAX computes on, '') or (None, why it sees none), asked in a fresh process."""
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.devices('gpu')[0].device_kind)"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode == 0:
        return probe.stdout.strip(), ""
    return None, (probe.stderr.strip().splitlines() or ["no answer"])[-1]


def gpu_sections(budget: float) -> list[str]:
    """The training setups with JAX on the GPU, then on the CPU of the same machine; skipped, saying why,
    where JAX sees no GPU."""
    name, why = visible_gpu()
    if name is None:
        return ["## On a GPU\n", f"Skipped: JAX sees no GPU on this machine ({why}). `python -m "
                "benchmarks.gpu_sized --scale 0.025` trains `make run-gpu`'s brackets configuration here at 1/40 of "
                "its samples.", ""]
    print("make run-gpu's brackets configuration on the GPU...", flush=True)
    gpu_sized = subprocess.run([sys.executable, "-m", "benchmarks.gpu_sized"], check=True, capture_output=True,
                               text=True, env={**os.environ, "JAX_PLATFORMS": "cuda"}).stdout
    return [f"## On a GPU: {name} against this machine's CPU\n",
            *on_backend({"training", "predict"}, budget, "jax", "cuda"),
            *on_backend({"training", "predict"}, budget, "jax", "cpu"),
            "## `make run-gpu`'s brackets configuration on the GPU (`python -m benchmarks.gpu_sized`)\n",
            *gpu_sized.rstrip("\n").split("\n"), ""]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600, help="training seconds per setup (default 600)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, help="default: docs/benchmarks.md when every section runs")
    parser.add_argument("--backend", choices=backends.BACKENDS, help="training and predict on this backend alone")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; allowed: {', '.join(SECTIONS)}")

    sections = [f"# Benchmarks\n\n`make bench` on {platform.machine()}, {os.cpu_count()} cores, "
                f"{time.strftime('%Y-%m-%d')}. Every ratio compares figures measured in the same run.\n"]
    if "data" in only:
        print("data generation ...", flush=True)
        sections += ["## Data generation (3-digit addition)\n", *bench_data(), ""]
    if only & {"training", "predict"}:
        if args.backend:
            # Before anything imports Keras; not pipeline.backend.use, whose compilation cache would let a
            # rerun skip the compiling that each setup's time to accuracy includes.
            os.environ["KERAS_BACKEND"] = args.backend
            sections += accuracy_sections(only, args.budget, args.backend)
        else:
            for name in backends.BACKENDS:
                sections += on_backend(only & {"training", "predict"}, args.budget, name)
    if "backends" in only:
        sections += ["## Each backend: fresh processes (`python -m benchmarks.backends`)\n",
                     *backends.bench_backends(), ""]
    if "startup" in only:
        sections += ["## Start-up: fresh processes vs warm forks (`ADDER_WARM`)\n", *startup.bench_startup(), ""]
    if "make_run" in only:
        sections += ["## `make run` on the defaults (warm forks, empty MLflow store)\n", *startup.bench_make_run(), ""]
    if "widths" in only:
        sections += ["## Decoder batches cut to few widths (`python -m benchmarks.widths`)\n",
                     *widths.bench_widths(), ""]
    if "gpu" in only and not args.backend:
        print("GPU ...", flush=True)
        sections += gpu_sections(args.budget)
    report = "\n".join(sections) + "\n"
    out = args.out or (Path("docs/benchmarks.md") if only == set(SECTIONS) else None)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
