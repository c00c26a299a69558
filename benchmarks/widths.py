"""What cutting a decoder's batches to few widths saves: the `brackets` worked-steps transformer of
params.yaml trained for a few epochs, each setup in a fresh process with an empty JAX compilation cache,
as the pipeline does it (widths rounded to powers of two, a batch that divides the epoch) against widths
rounded to multiples of 8 at the batch of 64 that leaves a short last batch. Every width, and the short
batch, is one more training step for XLA to compile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from benchmarks.backends import PROJECT

EXPERIMENT = "brackets-transformer"
EPOCHS = 3

# (label, rounding, batch size); the first is the baseline of the ratios.
SETUPS = (("multiples of 8, batch 64", "multiples_of_8", 64),
          ("multiples of 8, batch 80", "multiples_of_8", 80),
          ("powers of two, batch 80 (the pipeline's)", "powers_of_two", 80))

# One setup: seconds at the end of each epoch (validation included) and the widths its batches took.
RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from pipeline import backend, problems
    from pipeline.config import load_params
    rounding, batch_size, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    params = load_params()
    exp = params.experiment("{experiment}").model_copy(update=dict(epochs=epochs, batch_size=batch_size))
    backend.use("jax")
    import pipeline.train as train
    if rounding == "multiples_of_8":
        train.rounded_width = lambda widths: -(-np.asarray(widths) // 8) * 8
    splits = [problems.read_csv(Path("data", exp.task, f"{{split}}.csv")) for split in ("train", "val")]
    trained = train.train(exp, params.task(exp.task), *splits, params.seed)
    _, y = trained.codec.training_pair(splits[0].text, splits[0].answer, splits[0].steps)
    widths = np.unique(train.rounded_width(trained.codec.target_widths(y))).tolist()
    print(json.dumps({{"seconds": [epoch["seconds"] for epoch in trained.history], "widths": widths}}))
""").format(experiment=EXPERIMENT)


def run_setup(rounding: str, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="adder-bench-jax-") as cache:
        result = subprocess.run([sys.executable, "-c", RUN, rounding, str(batch_size), str(EPOCHS)], cwd=PROJECT,
                                env={**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}, capture_output=True,
                                text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_widths() -> list[str]:
    if not (PROJECT / "data" / "brackets" / "train.csv").is_file():
        return ["Needs the brackets data: run `make run` (or `dvc repro generate@brackets`) first."]
    rows, base = [], None
    for label, rounding, batch_size in SETUPS:
        print(f"widths: {label} ...", flush=True)
        figures = run_setup(rounding, batch_size)
        seconds = figures["seconds"]
        first, later = seconds[0], (seconds[-1] - seconds[0]) / (len(seconds) - 1)
        base = base or (first, later)
        rows.append(f"| {label} | {', '.join(map(str, figures['widths']))} | {first:.1f} | {base[0] / first:.1f}x "
                    f"| {later:.1f} | {base[1] / later:.1f}x |")
    return [f"`{EXPERIMENT}` for {EPOCHS} epochs of 10,000 samples, seed 1, each setup in a fresh process with an "
            "empty compilation cache; seconds include scoring the validation split after each epoch.\n",
            "| batches | widths | first epoch s | faster | later epochs s | faster |", "|---|---|---|---|---|---|",
            *rows]


if __name__ == "__main__":
    print("\n".join(bench_widths()))
