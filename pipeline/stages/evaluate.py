"""The evaluate stage: every experiment scored on its test split, in one process."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipeline import backend, model_folder, problems, registry, tracking
from pipeline.breakdown import breakdown_rows, breakdowns
from pipeline.codec import NumberCodec, accepting, lengths_in, save_codec
from pipeline.command import arguments, run_command
from pipeline.config import Params, load_params, project_root
from pipeline.figures import write_figures
from pipeline.model_folder import load_trained
from pipeline.seeds import log_seed_runs, over_seeds, per_seed
from pipeline.serving import log_serving_model
from pipeline.stages.files import write_json

SAMPLE_ROWS = 50
# What `dvc exp show` and `dvc metrics diff` list: one column per figure a comparison turns on.
HEADLINE = ("exact_match", "char_accuracy", "rmse", "train_seconds")


def headline(metrics: dict) -> dict:
    """The headline figures of metrics, per-length exact match included."""
    return {k: v for k, v in metrics.items() if k in HEADLINE or k.startswith("exact_match_")}


def evaluate(exp_names: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Scores each named experiment (default: every one in params.yaml) in one process, so Keras and
    MLflow load once; yields (name, metrics) as each is done."""
    params = load_params()
    names = exp_names or list(params.experiments)
    for name in names:
        params.experiment(name)  # an unknown name fails before any work
    tracking.connect(project_root())  # so does an unreachable tracking server
    backend.use(params.backend)  # and a backend that is not installed
    for name in names:
        for line in tracking.end_dead_runs(name):  # a training or an evaluate of it killed: say so in MLflow too
            print(line, flush=True)
        yield name, evaluate_one(name, params)
    # adder-all serves every task's champion: rebuilt whenever they differ from its members, even when the
    # evaluate that moved a champion was killed before rebuilding it (a no-op when current).
    if registry.promotion_on():
        registry.publish_all_families(project_root(), params.backend)


def evaluate_one(exp_name: str, params: Params) -> dict:
    """metrics/<experiment>.json (the headline figures) and evaluation/<experiment>.json (those plus
    sizes, timings, breakdowns and the learning curve); adds test metrics and samples to the training run."""
    from pipeline.evaluate import length_generalisation, predict_answers, predict_worked, score

    root = project_root()
    exp = params.experiment(exp_name)
    folder = root / "models" / exp_name
    model, codec = load_trained(folder)  # checked against run.json: the run that logged exactly these files
    run = model_folder.verified(folder)
    test = problems.read_csv(root / "data" / exp.task / "test.csv")
    summary = json.loads((root / "data" / exp.task / "summary.json").read_text())
    # A model that writes worked steps: scored on its answers, its steps broken down.
    predicted, worked = (predict_worked(model, codec, test.text) if codec.writes_steps else
                         (predict_answers(model, codec, test.text), None))
    metrics = {
        **score(predicted, test.answer, codec),
        "train_seconds": run["train_seconds"],
        "parameters": run["parameters"],
        "test_size": len(test),
        "overlap_test": summary["overlap_test"],
        **run["seconds_to"],
    }
    lengths = length_generalisation(model, codec, exp.eval_lengths, codec.limits.terms, params.seed)
    metrics.update({f"exact_match_{n}_digits": value for n, value in lengths.items()})
    split = breakdowns(test.text, test.answer, predicted, test.steps, worked)
    held = {name: held_out(model, codec, root / "data", exp.task, name) for name in exp.eval_tasks}
    metrics.update({f"exact_match_on_{name}": figures["exact_match"] for name, figures in held.items()})
    history = pd.read_csv(folder / "history.csv")
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    # MLflow first: if the run is gone or the server fails, no file says this experiment was scored.
    decision = log_and_register(exp_name, params, run, test, summary, predicted, metrics, split, codec, held,
                                history)
    seeds = per_seed(folder, run, params.seeds_of(exp_name)[0], test, predicted, metrics)
    if len(seeds) > 1:  # the chosen seed's figures above, registered; from here on the figures over seeds
        metrics.update(over_seeds(seeds))
        log_seed_runs(folder, run, seeds, headline(over_seeds(seeds)))
    write_json(headline(metrics), root / "metrics" / f"{exp_name}.json")
    # run_id: the run that holds the experiment's figures (the parent of its seeds' runs, where it has several).
    write_json({**metrics, "device": run.get("device", "unknown"), "run_id": run.get("parent_run_id", run["run_id"]),
                "per_seed": seeds, "breakdown": split,
                "held_out": held, "history": history.to_dict("records")}, root / "evaluation" / f"{exp_name}.json")
    return {**metrics, "breakdown": split, "registry": decision}


def held_out(model, codec, data: Path, trained_on: str, task_name: str) -> dict:
    """The model scored on the test split of a task it never trained on: exact match over all its problems,
    those it cannot read (too long for its input, or characters it has no code for) counted wrong; the
    share it can read; the share of them in its training split; the breakdowns."""
    from pipeline.evaluate import predict_answers, predict_worked

    test = problems.read_csv(data / task_name / "test.csv")
    alphabet = set(codec.alphabet)
    fits = np.strings.str_len(test.text) <= codec.in_width
    readable = fits & np.array([set(text) <= alphabet for text in test.text.tolist()], dtype=bool)
    predicted, worked = np.full(len(test), "", dtype=object), np.full(len(test), "", dtype=object)
    if readable.any():
        read = test.text[readable]
        if codec.writes_steps:
            predicted[readable], worked[readable] = predict_worked(model, codec, read)
        else:
            predicted[readable] = predict_answers(model, codec, read)
    predicted = predicted.astype(str)
    steps = test.steps if codec.writes_steps else None
    return {"exact_match": float(np.mean(predicted == test.answer.astype(str))) if len(test) else 0.0,
            "readable": float(readable.mean()) if len(test) else 0.0,
            "overlap_train": problems.overlap(problems.read_csv(data / trained_on / "train.csv"), test),
            "test_size": len(test),
            "breakdown": breakdowns(test.text, test.answer, predicted, steps, worked.astype(str) if steps is not None
                                    else None)}


def serving_model(exp_name: str, codec, lengths: dict[int, float], example: str, backend_name: str) -> str:
    """Logs the experiment's serving model to the active run: its Keras model with the codec accepting the
    operand lengths this evaluation measured it to add (pipeline.codec.accepting)."""
    folder = project_root() / "models" / exp_name
    with tempfile.TemporaryDirectory(prefix="adder-serving-") as tmp:
        shutil.copy2(folder / "model.keras", Path(tmp) / "model.keras")
        save_codec(accepting(codec, lengths), Path(tmp) / "codec.json")
        return log_serving_model([(exp_name, Path(tmp), None)], example, backend_name,
                                 name=registry.serving_name(exp_name))


def log_and_register(exp_name: str, params: Params, run: dict, test, summary: dict, predicted, metrics: dict,
                     split: dict, codec, held: dict, history: pd.DataFrame) -> dict:
    """Adds the test figures, samples, breakdown tables and figures to the training run; a sequence model
    also gets its serving model (logged once per run), registered as a version of adder-<task> and judged
    for champion. Returns the decision ({} for a model that is not registered)."""
    root = project_root()
    exp = params.experiment(exp_name)
    decision = {}
    with tracking.resume_run(run["run_id"]):
        serving_uri = None if isinstance(codec, NumberCodec) else (
            registry.serving_model_of(run["run_id"], exp_name)
            or serving_model(exp_name, codec, lengths_in(metrics), test.text[0], params.backend))
        # Logged against the test split and the run's models, which the UI then shows them with.
        tested = tracking.log_dataset(pd.DataFrame({"problem": test.text, "answer": test.answer}), root,
                                      root / "data" / exp.task / "test.csv", "test")
        models = [run["model_uri"], *([serving_uri] if serving_uri else [])]
        tracking.log_test_metrics({f"test_{k}": v for k, v in headline(metrics).items() if k != "train_seconds"},
                                  tested, models)
        mlflow.log_table({"problem": test.text[:SAMPLE_ROWS].tolist(),
                          "expected": test.answer[:SAMPLE_ROWS].astype(str).tolist(),
                          "predicted": predicted[:SAMPLE_ROWS].tolist()}, "samples.json")
        mlflow.log_table(pd.DataFrame(breakdown_rows(split)), "breakdown.json")
        for name, figures in held.items():  # tasks it never trained on: a table each
            mlflow.log_table(pd.DataFrame(breakdown_rows(figures["breakdown"])), f"breakdown_{name}.json")
        with tempfile.TemporaryDirectory(prefix="adder-figures-") as tmp:  # its own curve and breakdowns
            for figure in write_figures({exp_name: {"breakdown": split}}, {exp_name: history}, Path(tmp)):
                mlflow.log_artifact(str(figure), "figures")
        if serving_uri:  # registered as a version of adder-<task>; champion only if it scores higher
            mlflow.set_tag("test_sha256", summary["splits"]["test"]["sha256"])
            decision = registry.register_and_crown(exp.task, serving_uri, run["run_id"], metrics["exact_match"],
                                                   summary["splits"]["test"]["sha256"],
                                                   {"experiment": exp_name, "model": exp.model, "framing": exp.framing})
    return decision


def command(exp_names: list[str] | None = None) -> None:
    """`adder evaluate [EXPERIMENT...]`: the stage, a line per experiment as it is scored."""
    for name, metrics in evaluate(exp_names):
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("exact_match", "char_accuracy", "rmse") if k in metrics)
        print(f"{name}: {shown}", flush=True)
        if registry := metrics["registry"]:
            print(f"{registry['model']} version {registry['version']}: {registry['decision']} ({registry['reason']})",
                  flush=True)


def main() -> None:
    """`python3 -m pipeline.stages.evaluate [EXPERIMENT...]`, what dvc.yaml runs."""
    run_command(lambda: command(arguments("python3 -m pipeline.stages.evaluate [EXPERIMENT...]", 0, None) or None),
                __spec__.name)


if __name__ == "__main__":
    main()
