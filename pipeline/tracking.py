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
        raise AdderError(f"MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()}; retrain it: "
                         "dvc repro --force train@<experiment>") from None


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


# --- the string-in, string-out model, and the registry: one registered model per task (adder-<task>),
# its best version under the alias "champion".

CHAMPION = "champion"
# What the served model imports; pinned so that MLflow need not infer them (slow) and a served copy matches.
REQUIREMENTS = ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "pydantic", "pyyaml")


def log_serving_model(folder: Path, example: str) -> str:
    """Logs pipeline.serving's pyfunc with the Keras model, its codec and the pipeline package itself,
    so it loads in a fresh process; returns the model URI."""
    import importlib.metadata

    import pipeline
    from pipeline.serving import SIGNATURE, AdderModel

    info = mlflow.pyfunc.log_model(
        name="serving",
        python_model=AdderModel(),
        artifacts={"model": str(folder / "model.keras"), "codec": str(folder / "codec.json")},
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=SIGNATURE,
        input_example=[example],
        pip_requirements=[f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS],
    )
    return info.model_uri


def registered_name(task: str) -> str:
    return f"adder-{task}"


def beats(candidate: float, champion: float | None) -> bool:
    """Only a strictly higher score takes the alias: a tie keeps the model already serving."""
    return champion is None or candidate > champion


def champion_of(client, name: str) -> dict | None:
    """The champion version of a registered model with the test figures logged to its run, or None."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None  # no such registered model, or no champion yet
    run = client.get_run(version.run_id)
    return {"version": str(version.version), "exact_match": run.data.metrics.get("test_exact_match"),
            "test_sha256": run.data.tags.get("test_sha256")}


# Promotion can be switched off, so that CI on a pull request registers candidates without moving any
# champion; `adder retrain-report --promote` (the main branch) switches it on and crowns what was held.
PROMOTE = "ADDER_PROMOTE"


def promotion_on() -> bool:
    """$ADDER_PROMOTE: unset or anything but 0/false/no/off lets evaluate move the champion alias."""
    return os.environ.get(PROMOTE, "1").strip().lower() not in ("0", "false", "no", "off")


def register_and_crown(task: str, model_uri: str, run_id: str, exact_match: float, test_sha256: str) -> dict:
    """Registers model_uri as a new version of adder-<task>; moves the champion alias to it only if it
    beats the champion's test exact match on the same test set, and promotion is on. Logs the decision
    to the active run."""
    client = mlflow.MlflowClient()
    name = registered_name(task)
    champion = champion_of(client, name)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a parallel evaluate (a queued sweep) made it
                raise
    # Scoring the same run again (evaluate reruns for every experiment) reuses its version.
    registered = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    # The client, unlike mlflow.register_model, prints nothing: the stage's stderr holds errors only.
    version = registered[0] if registered else client.create_model_version(
        name, source=model_uri, run_id=run_id, model_id=model_uri.removeprefix("models:/"))
    return crown(client, name, str(version.version), champion, exact_match, test_sha256, promotion_on())


def crown(client, name: str, version: str, champion: dict | None, exact_match: float, test_sha256: str,
          promote: bool) -> dict:
    """The champion decision for one version: "promoted", "kept" (it does not win), or "held" (it wins
    but promotion is off). Logs the decision and both figures to the active run."""
    if champion is None or champion["exact_match"] is None:
        wins, reason = True, "no champion yet"
    elif champion["test_sha256"] != test_sha256:
        wins, reason = True, "the champion was scored on another test set"
    else:
        wins = beats(exact_match, champion["exact_match"])
        reason = "higher test exact match" if wins else "not higher than the champion's test exact match"
    if wins and promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    elif wins:
        reason += f"; promotion is off ({PROMOTE}=0)"
    decision = {"model": name, "version": version, "decision": "kept" if not wins else "promoted" if promote else "held",
                "reason": reason, "candidate_exact_match": exact_match,
                "champion_version": champion and champion["version"],
                "champion_exact_match": champion and champion["exact_match"]}
    mlflow.set_tags({f"registry.{k}": str(v) for k, v in decision.items() if not k.endswith("exact_match")})
    mlflow.log_metrics({f"registry.{k}": v for k, v in decision.items() if k.endswith("exact_match") and v is not None})
    return decision


def registry_decision(client, run_id: str) -> dict | None:
    """The champion decision logged to a training run, or None if its model was never registered."""
    data = client.get_run(run_id).data
    if "registry.decision" not in data.tags:
        return None
    return {**{k.removeprefix("registry."): v for k, v in data.tags.items() if k.startswith("registry.")},
            **{k.removeprefix("registry."): v for k, v in data.metrics.items() if k.startswith("registry.")}}


def promote_held(run_ids: list[str]) -> list[dict]:
    """Decides again, with promotion on, for the versions these runs registered while it was off (DVC
    need not rerun evaluate for them), against today's champion; returns the new decisions."""
    client = mlflow.MlflowClient()
    decisions = []
    for run_id in run_ids:
        held = registry_decision(client, run_id)
        if held is None or held["decision"] != "held":
            continue
        run = client.get_run(run_id)
        with resume_run(run_id):
            decisions.append(crown(client, held["model"], held["version"], champion_of(client, held["model"]),
                                   run.data.metrics["test_exact_match"], run.data.tags["test_sha256"], promote=True))
    return decisions


def best_champion() -> str:
    """The champion of the task whose champion has the highest test exact match, as a models:/ URI."""
    client = mlflow.MlflowClient()
    scored = []
    for model in client.search_registered_models(filter_string="name LIKE 'adder-%'"):
        champion = champion_of(client, model.name)
        if champion and champion["exact_match"] is not None:
            scored.append((champion["exact_match"], model.name))
    if not scored:
        raise AdderError("no champion in the model registry yet; run `dvc repro` (evaluate registers models) "
                         "or name a MODEL")
    return f"models:/{max(scored)[1]}@{CHAMPION}"


def served_model_uri(root: Path, model: str | None) -> str:
    """MODEL as an MLflow URI of a string-answering model: a URI as given, an experiment's logged pyfunc,
    else a task's (or registered model's) champion; raises AdderError if no such model loads."""
    import json

    if model is None:
        uri = best_champion()
    elif ":/" in model:
        uri = model
    elif (run_file := root / "models" / model / "run.json").is_file():
        uri = json.loads(run_file.read_text()).get("serving_uri")
        if uri is None:
            raise AdderError(f"experiment {model!r} has no served model: only sequence models answer strings")
    else:
        uri = f"models:/{model if model.startswith('adder-') else registered_name(model)}@{CHAMPION}"
    try:
        flavor = mlflow.models.get_model_info(uri).flavors.get("python_function", {})
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise AdderError(f"no model at {uri}: {str(e).strip().splitlines()[0]}") from None
    if flavor.get("loader_module") != "mlflow.pyfunc.model":
        raise AdderError(f"{uri} is not a model that answers expressions as strings; "
                         "serve an experiment's `serving` model or a task's champion")
    return uri
