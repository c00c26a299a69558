"""The train stage: models/<experiment>/, tracked as one MLflow run."""

from __future__ import annotations

import mlflow
import pandas as pd

from pipeline import backend, problems, tracking
from pipeline.codec import NumberCodec, codec_spec, save_codec
from pipeline.config import load_params, project_root
from pipeline.serving import log_serving_model
from pipeline.stages.files import write_json, write_rows


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
    backend.use(params.backend)  # so does a backend that is not installed
    from pipeline.train import train as fit  # Keras and its backend only once the inputs are good

    out = root / "models" / exp_name
    out.mkdir(parents=True, exist_ok=True)
    run_name, tags = tracking.training_run(root, exp_name, params)  # named after its DVC experiment in a sweep
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({"experiment": exp_name, "seed": params.seed, "backend": params.backend,
                           **exp.model_dump(exclude={"description"}),
                           **{f"task.{k}": v for k, v in task.model_dump().items()}})
        for rows, split, context in ((train_split, "train", "training"), (val_split, "val", "validation")):
            frame = pd.DataFrame({"problem": rows.text, "answer": rows.answer})
            tracking.log_dataset(frame, root, data / f"{split}.csv", context)
        trained = fit(exp, task, train_split, val_split, params.seed, on_epoch=progress(exp_name, exp.epochs))
        trained.model.save(out / "model.keras")
        save_codec(trained.codec, out / "codec.json")
        write_rows(trained.history, out / "history.csv")
        mlflow.log_metrics({"train_seconds": trained.train_seconds, "parameters": trained.model.count_params(),
                            **trained.seconds_to})
        model_uri = tracking.log_keras_model(trained.model, codec_spec(trained.codec))
        # Sequence models also answer strings with strings (pipeline.serving), for `adder serve`.
        serving = ({} if isinstance(trained.codec, NumberCodec) else
                   {"serving_uri": log_serving_model([(exp_name, out, None)], train_split.text[0], params.backend)})
    info = {"run_id": run.info.run_id, "model_uri": model_uri, **serving, "train_seconds": trained.train_seconds,
            "parameters": trained.model.count_params(), "seconds_to": trained.seconds_to}
    write_json(info, out / "run.json")
    return info
