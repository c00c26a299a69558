"""The train stage: models/<experiment>/, tracked as one MLflow run."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd

from pipeline import backend, model_folder, problems, tracking
from pipeline.codec import NumberCodec, codec_spec, save_codec
from pipeline.config import load_params, project_root
from pipeline.serving import log_serving_model
from pipeline.stages.files import write_rows


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
    """models/<experiment>/: the Keras model, its codec, the training history and run.json (the MLflow
    run that logged them, and their sha256)."""
    root, params = project_root(), load_params()
    data = root / "data" / params.experiment(exp_name).task
    train_split, val_split = problems.read_csv(data / "train.csv"), problems.read_csv(data / "val.csv")
    tracking.connect(root)  # before training: an unreachable server fails now, not after the work
    backend.use(params.backend)  # so does a backend that is not installed
    from pipeline.train import train as fit  # Keras and its backend only once the inputs are good

    for line in tracking.end_dead_runs(exp_name):  # an earlier training of it killed: say so in MLflow too
        print(line, flush=True)
    out = root / "models" / exp_name
    staging = model_folder.staging_folder(out)  # published as `out` only once complete: see model_folder
    try:
        info = train_into(staging, exp_name, params, train_split, val_split, fit)
        model_folder.publish(staging, info, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


@contextmanager
def ended_if_interrupted():
    """Ends the active run as KILLED on Ctrl-C or SIGTERM (the CLI turns both into KeyboardInterrupt);
    MLflow would mark it FAILED."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


def train_into(folder: Path, exp_name: str, params, train_split, val_split, fit) -> dict:
    """Trains, writes the model's files into folder and logs them as one MLflow run; returns run.json's
    contents (the run and its logged models)."""
    root = project_root()
    exp = params.experiment(exp_name)
    task = params.tasks[exp.task]
    data = root / "data" / exp.task
    run_name, tags = tracking.training_run(root, exp_name, params)  # named after its DVC experiment in a sweep
    with mlflow.start_run(run_name=run_name, tags={**tags, **tracking.process_tags()}) as run, ended_if_interrupted():
        mlflow.log_params({"experiment": exp_name, "seed": params.seed, "backend": params.backend,
                           **exp.model_dump(exclude={"description"}),
                           **{f"task.{k}": v for k, v in task.model_dump().items()}})
        for rows, split, context in ((train_split, "train", "training"), (val_split, "val", "validation")):
            frame = pd.DataFrame({"problem": rows.text, "answer": rows.answer})
            tracking.log_dataset(frame, root, data / f"{split}.csv", context)
        trained = fit(exp, task, train_split, val_split, params.seed, on_epoch=progress(exp_name, exp.epochs))
        trained.model.save(folder / "model.keras")
        save_codec(trained.codec, folder / "codec.json")
        write_rows(trained.history, folder / "history.csv")
        mlflow.log_metrics({"train_seconds": trained.train_seconds, "parameters": trained.model.count_params(),
                            **trained.seconds_to})
        model_uri = tracking.log_keras_model(trained.model, codec_spec(trained.codec))
        # Sequence models also answer strings with strings (pipeline.serving), for `adder serve`.
        serving = ({} if isinstance(trained.codec, NumberCodec) else
                   {"serving_uri": log_serving_model([(exp_name, folder, None)], train_split.text[0], params.backend)})
    return {"run_id": run.info.run_id, "model_uri": model_uri, **serving, "train_seconds": trained.train_seconds,
            "parameters": trained.model.count_params(), "seconds_to": trained.seconds_to}
