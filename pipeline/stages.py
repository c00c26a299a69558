"""The DVC stages: each reads its inputs, calls the pure code, writes its outputs and tracks them in MLflow."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipeline import problems, tracking
from pipeline.breakdown import breakdown_metrics, breakdown_rows, breakdowns
from pipeline.codec import NumberCodec, load_codec, save_codec
from pipeline.config import Params, load_params, project_root
from pipeline.errors import AdderError
from pipeline.report import comparison_table, write_figures

SAMPLE_ROWS = 50


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_rows(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def generate(task_name: str) -> dict:
    """data/<task>/{train,val,test}.csv and summary.json; logs sizes and digests to MLflow."""
    root, params = project_root(), load_params()
    task = params.task(task_name)
    tracking.connect(root, tracking.DATASETS)
    splits = problems.split_problems(task, params.seed)
    folder = root / "data" / task_name
    summary = {
        "distinct_problems": task.space_size,
        "disjoint": task.disjoint,
        "overlap_val": problems.overlap(splits["train"], splits["val"]),
        "overlap_test": problems.overlap(splits["train"], splits["test"]),
        "splits": {},
    }
    for split in problems.SPLITS:
        digest = problems.write_csv(splits[split], folder / f"{split}.csv")
        summary["splits"][split] = {"size": len(splits[split]), "sha256": digest}
    write_json(summary, folder / "summary.json")
    with mlflow.start_run(run_name=f"generate-{task_name}", tags=tracking.run_tags(root, task=task_name)):
        mlflow.log_params({"task": task_name, "seed": params.seed, **task.model_dump()})
        mlflow.log_metrics({"distinct_problems": task.space_size, "overlap_test": summary["overlap_test"],
                            **{f"{s}_size": v["size"] for s, v in summary["splits"].items()}})
        mlflow.log_dict(summary, "summary.json")
    return summary


def progress(exp_name: str, epochs: int):
    """The per-epoch hook: every epoch to MLflow, about ten lines to the terminal."""
    every = max(1, epochs // 10)

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_epoch(epoch, logs)
        if epoch % every == 0 or epoch == epochs:
            print(f"{exp_name}: epoch {epoch}/{epochs}, loss {logs['loss']:.4f}, "
                  f"held-out exact match {logs['val_exact_match']:.2%} ({logs['seconds']:.0f}s)", flush=True)

    return on_epoch


def train(exp_name: str) -> dict:
    """models/<experiment>/: the Keras model, its codec, the training history and the MLflow run id."""
    root, params = project_root(), load_params()
    exp = params.experiment(exp_name)
    task = params.tasks[exp.task]
    data = root / "data" / exp.task
    train_split, val_split = problems.read_csv(data / "train.csv"), problems.read_csv(data / "val.csv")
    tracking.connect(root)  # before training: an unreachable server fails now, not after the work
    from pipeline.train import train as fit  # TensorFlow (~8 s to import) only once the inputs are good

    out = root / "models" / exp_name
    out.mkdir(parents=True, exist_ok=True)
    tags = tracking.run_tags(root, task=exp.task, model=exp.model)
    with mlflow.start_run(run_name=exp_name, tags=tags) as run:
        mlflow.log_params({"experiment": exp_name, "seed": params.seed, **exp.model_dump(),
                           **{f"task.{k}": v for k, v in task.model_dump().items()}})
        frame = pd.DataFrame({"problem": train_split.text, "answer": train_split.answer})
        tracking.log_dataset(frame, data / "train.csv", f"{exp.task}-train", "training")
        trained = fit(exp, task, train_split, val_split, params.seed, on_epoch=progress(exp_name, exp.epochs))
        trained.model.save(out / "model.keras")
        save_codec(trained.codec, out / "codec.json")
        write_rows(trained.history, out / "history.csv")
        mlflow.log_metrics({"train_seconds": trained.train_seconds, "parameters": trained.model.count_params(),
                            **trained.seconds_to})
        model_uri = tracking.log_keras_model(trained.model, out / "codec.json")
        # Sequence models also answer strings with strings (pipeline.serving), for `adder serve`.
        serving = ({} if isinstance(trained.codec, NumberCodec) else
                   {"serving_uri": tracking.log_serving_model(out, train_split.text[0])})
    info = {"run_id": run.info.run_id, "model_uri": model_uri, **serving, "train_seconds": trained.train_seconds,
            "parameters": trained.model.count_params(), "seconds_to": trained.seconds_to}
    write_json(info, out / "run.json")
    return info


def load_trained(folder: Path) -> tuple:
    import keras

    import pipeline.models  # noqa: F401  registers the custom layers (PositionalEmbedding) before loading

    if not (folder / "model.keras").is_file():
        raise AdderError(f"no trained model in {folder}; run `dvc repro` (or `adder train`) first")
    return keras.models.load_model(folder / "model.keras", compile=False), load_codec(folder / "codec.json")


def evaluate(exp_names: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Scores each named experiment (default: every one in params.yaml) in one process, so TensorFlow
    loads once; yields (name, metrics) as each is done."""
    params = load_params()
    names = exp_names or list(params.experiments)
    for name in names:
        params.experiment(name)  # an unknown name fails before any work
    tracking.connect(project_root())  # so does an unreachable tracking server
    for name in names:
        yield name, evaluate_one(name, params)


def evaluate_one(exp_name: str, params: Params) -> dict:
    """metrics/<experiment>.json, plots/curves/<experiment>.csv and plots/breakdown/<experiment>/;
    adds test metrics and samples to the training run."""
    from pipeline.evaluate import length_generalisation, predict_answers, score

    root = project_root()
    exp = params.experiment(exp_name)
    folder = root / "models" / exp_name
    model, codec = load_trained(folder)
    run = json.loads((folder / "run.json").read_text())
    test = problems.read_csv(root / "data" / exp.task / "test.csv")
    summary = json.loads((root / "data" / exp.task / "summary.json").read_text())
    predicted = predict_answers(model, codec, test.text)
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
    split = breakdowns(test.text, test.answer, predicted)
    write_json({**metrics, "breakdown": split}, root / "metrics" / f"{exp_name}.json")
    history = pd.read_csv(folder / "history.csv")
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    (root / "plots" / "curves").mkdir(parents=True, exist_ok=True)
    history.to_csv(root / "plots" / "curves" / f"{exp_name}.csv", index=False)
    write_breakdown_plots(split, root / "plots" / "breakdown" / exp_name)
    registry = {}
    with tracking.resume_run(run["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if k not in ("train_seconds", "parameters")
                            and not k.startswith("seconds_to")})
        mlflow.log_table({"problem": test.text[:SAMPLE_ROWS].tolist(), "expected": test.answer[:SAMPLE_ROWS].astype(str).tolist(),
                          "predicted": predicted[:SAMPLE_ROWS].tolist()}, "samples.json")
        mlflow.log_metrics(breakdown_metrics(split))
        mlflow.log_table(pd.DataFrame(breakdown_rows(split)), "breakdown.json")
        if "serving_uri" in run:  # registered as a version of adder-<task>; champion only if it scores higher
            mlflow.set_tag("test_sha256", summary["splits"]["test"]["sha256"])
            registry = tracking.register_and_crown(exp.task, run["serving_uri"], run["run_id"], metrics["exact_match"],
                                                   summary["splits"]["test"]["sha256"])
    return {**metrics, "breakdown": split, "registry": registry}


def write_breakdown_plots(split: dict, folder: Path) -> None:
    """One CSV per breakdown (group, count, exact_match): the DVC plots of the experiment's breakdowns."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.csv"):
        stale.unlink()
    for name, groups in split.items():
        write_rows([{"group": group, **cell} for group, cell in groups.items()], folder / f"{name}.csv")


def compare() -> Path:
    """reports/comparison.md: one row per experiment; logged to MLflow."""
    root, params = project_root(), load_params()
    rows = {}
    for name in params.experiments:
        path = root / "metrics" / f"{name}.json"
        if not path.is_file():
            raise AdderError(f"missing {path.relative_to(root)}; evaluate experiment {name!r} first")
        rows[name] = json.loads(path.read_text())
    out = root / "reports" / "comparison.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(comparison_table(params, rows))
    curves = {name: pd.read_csv(path) for name in params.experiments
              if (path := root / "plots" / "curves" / f"{name}.csv").is_file()}
    figures = write_figures(rows, curves, root / "reports" / "figures")
    tracking.connect(root, tracking.REPORTS)
    with mlflow.start_run(run_name="compare", tags=tracking.run_tags(root)):
        mlflow.log_artifact(str(out))
        for figure in figures:
            mlflow.log_artifact(str(figure), "figures")
    return out
