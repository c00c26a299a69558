"""The train stage: models/<experiment>/, tracked as one MLflow run."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd

from pipeline import backend, device, model_folder, problems, tracking
from pipeline.codec import codec_spec, save_codec
from pipeline.command import arguments, run_command
from pipeline.config import load_params, project_root
from pipeline.kinds import kind
from pipeline.seeds import chosen_seed, seed_folder
from pipeline.stages.files import write_rows
from pipeline.stats import aggregate


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
    device.require_requested_gpu(params.backend, device.current())  # and a GPU build with no GPU
    from pipeline.train import train as fit  # Keras and its backend only once the inputs are good

    for line in tracking.end_dead_runs(exp_name):  # an earlier training of it killed: say so in MLflow too
        print(line, flush=True)
    out = root / "models" / exp_name
    staging = model_folder.staging_folder(out)  # published as `out` only once complete: see model_folder
    try:
        several = len(params.seeds_of(exp_name)) > 1
        info = (train_seeds if several else train_into)(staging, exp_name, params, train_split, val_split, fit)
        model_folder.publish(staging, info, out)
    except tracking.SERVER_ERRORS as e:
        raise tracking.server_lost(e, "training") from None
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


def train_into(folder: Path, exp_name: str, params, train_split, val_split, fit, seed: int | None = None) -> dict:
    """Trains, writes the model's files into folder and logs them as one MLflow run; returns run.json's
    contents (the run and its logged model). Under an active run (train_seeds), the run is its child."""
    root = project_root()
    exp = params.experiment(exp_name)
    task = params.tasks[exp.task]
    data = root / "data" / exp.task
    # Named after its DVC experiment in a sweep.
    run_name, tags = tracking.training_run(root, exp_name, params, kind(exp.model).WORDS)
    seed = params.seeds_of(exp_name)[0] if seed is None else seed
    child = mlflow.active_run() is not None
    where = device.current()
    with (mlflow.start_run(run_name=f"{run_name} seed {seed}" if child else run_name, nested=child,
                           tags={**tags, **tracking.process_tags(), **where.tags()}) as run, ended_if_interrupted()):
        mlflow.log_params({"experiment": exp_name, "seed": seed, "backend": params.backend,
                           **exp.model_dump(exclude={"description"}),
                           **{f"task.{k}": v for k, v in task.model_dump().items()}})
        for rows, split, context in ((train_split, "train", "training"), (val_split, "val", "validation")):
            frame = pd.DataFrame({"problem": rows.text, "answer": rows.answer})
            tracking.log_dataset(frame, root, data / f"{split}.csv", context)
        trained = fit(exp, task, train_split, val_split, seed,
                      on_epoch=progress(f"{exp_name} seed {seed}" if child else exp_name, exp.epochs))
        trained.model.save(folder / "model.keras")
        save_codec(trained.codec, folder / "codec.json")
        write_rows(trained.history, folder / "history.csv")
        mlflow.log_metrics({"train_seconds": trained.train_seconds, "parameters": trained.model.count_params(),
                            **trained.seconds_to})
        model_uri = tracking.log_keras_model(trained.model, codec_spec(trained.codec), exp_name)
    return {"run_id": run.info.run_id, "model_uri": model_uri, "train_seconds": trained.train_seconds,
            "parameters": trained.model.count_params(), "seconds_to": trained.seconds_to, "device": where.summary}


def train_seeds(folder: Path, exp_name: str, params, train_split, val_split, fit) -> dict:
    """Trains exp_name under each of its seeds into folder/seeds/<seed>/, each a child run of one parent run
    that holds the spread; copies the seed chosen on validation into folder itself (pipeline.seeds), the one
    evaluate logs a serving model for. Returns run.json's contents: the
    chosen seed's, with the parent run and every seed."""
    exp = params.experiment(exp_name)
    run_name, tags = tracking.training_run(project_root(), exp_name, params, kind(exp.model).WORDS)
    tags = {**tags, **tracking.process_tags(), **device.current().tags()}
    with mlflow.start_run(run_name=run_name, tags=tags) as parent, ended_if_interrupted():
        mlflow.log_params({"experiment": exp_name, "backend": params.backend, **exp.model_dump(exclude={"description"}),
                           **{f"task.{k}": v for k, v in params.tasks[exp.task].model_dump().items()}})
        runs, val = {}, {}
        for seed in params.seeds_of(exp_name):
            out = seed_folder(folder, seed)
            staging = model_folder.staging_folder(out)
            runs[seed] = train_into(staging, exp_name, params, train_split, val_split, fit, seed)
            val[seed] = model_folder.validation_score(staging)
            model_folder.publish(staging, runs[seed], out)
        chosen = chosen_seed(val)
        for name in model_folder.FILES:
            shutil.copy2(seed_folder(folder, chosen) / name, folder / name)
        spread = aggregate(list(val.values()))
        mlflow.set_tag("chosen_seed", chosen)  # a label, not a figure to chart beside the others
        mlflow.log_metrics({"train_seconds": sum(r["train_seconds"] for r in runs.values()),
                            **{f"val_exact_match_{k}": spread[k] for k in ("mean", "min", "max", "low", "high")}})
    return {**runs[chosen], "parent_run_id": parent.info.run_id, "seeds": list(val), "chosen_seed": chosen,
            "val_exact_match": val}


def command(exp_name: str) -> None:
    """`adder train EXPERIMENT`: the stage, and a line saying what it did."""
    info = train(exp_name)
    print(f"{exp_name}: trained in {info['train_seconds']:.1f}s, MLflow run {info['run_id']}")


def main() -> None:
    """`python3 -m pipeline.stages.train EXPERIMENT`, what dvc.yaml runs."""
    run_command(lambda: command(*arguments("python3 -m pipeline.stages.train EXPERIMENT", 1, 1)), __spec__.name)


if __name__ == "__main__":
    main()
