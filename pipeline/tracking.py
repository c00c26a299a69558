"""All MLflow code: where runs go, what they record, and failing fast when the store is unreachable."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import requests

from pipeline.errors import AdderError

# One MLflow experiment per kind of run, so the main one holds exactly one run per model experiment.
RUNS = "adder"
DATASETS = "adder-datasets"
REPORTS = "adder-reports"

# MLflow retries a dead server for minutes by default; a stage should fail in seconds instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else a sqlite store at the project root whatever the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def connect(root: Path, experiment: str = RUNS) -> str:
    """Points MLflow at the project's store and selects `experiment`; raises AdderError if unreachable."""
    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as e:
            raise AdderError(f"MLflow tracking server {uri} is unreachable ({type(e).__name__}); "
                             "start it or unset MLFLOW_TRACKING_URI") from None
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        # A local store keeps artifacts beside mlflow.db, not in the cwd's ./mlruns.
        location = None if uri.startswith("http") else (root / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def git_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def run_tags(root: Path, **extra: str) -> dict[str, str]:
    return {"git_commit": git_commit(root), "dvc_stage": os.environ.get("DVC_STAGE", "(outside dvc)"), **extra}


@contextmanager
def resume_run(run_id: str):
    """Reopens the run that training started, so one run holds an experiment's whole story."""
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
            raise
        raise AdderError(f"MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()}; retrain the experiment") from None


def log_epoch(epoch: int, logs: dict[str, float]) -> None:
    """Logs an epoch's loss, accuracy and held-out scores to the active run."""
    mlflow.log_metrics(logs, step=epoch)


def log_dataset(frame: pd.DataFrame, source: Path, name: str, context: str) -> None:
    mlflow.log_input(mlflow.data.from_pandas(frame, source=str(source), name=name), context=context)


def log_keras_model(model, codec_file: Path) -> str:
    """Logs the model (tensorflow flavor, loadable back) with its codec; returns the model URI."""
    import keras
    import mlflow.tensorflow
    import tensorflow

    info = mlflow.tensorflow.log_model(
        model,
        name="model",
        extra_files=[str(codec_file)],
        # Explicit requirements skip MLflow's slow inference of them.
        pip_requirements=[f"tensorflow-cpu=={tensorflow.__version__}", f"keras=={keras.__version__}"],
    )
    return info.model_uri
