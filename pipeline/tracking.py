"""All MLflow code: where runs go, what they record, and failing fast when the store is unreachable."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
import requests
import yaml

from pipeline.config import PARAMS_FILE
from pipeline.errors import AdderError

if TYPE_CHECKING:
    from pipeline.config import Params, Task

# One MLflow experiment per kind of run, so the main one holds exactly one run per model experiment.
RUNS = "adder"
DATASETS = "adder-datasets"
REPORTS = "adder-reports"
SERVED = "adder-served"  # the runs that build adder-all, every task's champion behind one endpoint

# MLflow retries a dead server for minutes by default; a stage should fail in seconds instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else a sqlite store at the project root whatever the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def in_temporary_copy(root: Path) -> bool:
    """Whether root is the copy under .dvc/tmp/exps/ that `dvc exp run --queue` (or --temp) runs in."""
    parts = root.resolve().parts
    return any(parts[i:i + 3] == (".dvc", "tmp", "exps") for i in range(len(parts)))


def connect(root: Path, experiment: str = RUNS) -> str:
    """Points MLflow at the project's store and selects `experiment`; raises AdderError if unreachable."""
    uri = tracking_uri(root)
    if in_temporary_copy(root) and not uri.startswith(("http://", "https://")):
        raise AdderError(f"this is a DVC experiment in a temporary copy ({root}), thrown away with the store {uri}; "
                         "start a tracking server and set MLFLOW_TRACKING_URI (README: queued experiments)")
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    # A local store keeps artifacts beside mlflow.db, not in the cwd's ./mlruns.
    open_experiment(experiment, None if uri.startswith("http") else (root / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    return uri


def check_server(uri: str) -> None:
    """Raises AdderError in one line unless the server answers /health and accepts this client's credentials,
    sent as MLflow sends them: MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, with its TLS
    settings (MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_CLIENT_CERT_PATH)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    try:
        # /health answers without credentials (MLflow's basic-auth app leaves it open), a listing needs them.
        for endpoint, params in (("/health", None), ("/api/2.0/mlflow/experiments/search", {"max_results": 1})):
            response = http_request(creds, endpoint, "GET", max_retries=0, timeout=5, raise_on_status=False,
                                    params=params)
            if response.status_code in (401, 403):
                raise AdderError(f"MLflow tracking server {uri} refused this client (HTTP {response.status_code}); "
                                 "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
            if response.status_code != 200:
                raise AdderError(f"MLflow tracking server {uri} answered {endpoint} with HTTP {response.status_code}; "
                                 "is it an MLflow server?")
    except (requests.RequestException, mlflow.exceptions.MlflowException) as e:
        wrapped = isinstance(e, mlflow.exceptions.MlflowException)
        cause = type(e.__cause__ or e).__name__ if wrapped else type(e).__name__
        raise AdderError(f"MLflow tracking server {uri} is unreachable ({cause}); "
                         "start it or unset MLFLOW_TRACKING_URI") from None


SERVER_ERRORS = (mlflow.exceptions.MlflowException, requests.RequestException)  # what a lost server raises


def server_lost(error: Exception, doing: str) -> Exception:
    """What to raise for an MLflow or network error met while `doing`: against a tracking server, one line
    naming it (nothing was published: the model folder is written only once the run has logged it all);
    anything else as it is."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return error
    detail = " ".join(str(error).split())
    return AdderError(f"MLflow tracking server {uri} failed during {doing} ({detail[:160]}); nothing was "
                      "published: with the server back, run it again")


# Experiment tags the UI reads: without KIND it opens an experiment in its GenAI view (traces, token usage).
KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # an experiment's or a run's description in the UI
EXPERIMENT_NOTES = {
    RUNS: "One run per experiment of params.yaml (`<task>-<model>[-variant]`): a task's problems learned by a "
          "model under one framing, trained, then scored on the task's held-out test split. Runs of one task "
          "compare models and encodings on the same problems; each run's description says how it differs.",
    DATASETS: "One run per task of params.yaml: the sizes, sha256 digests and train/test overlap of data/<task>/.",
    REPORTS: "One run per `adder compare`: reports/comparison.md, every experiment side by side, and its figures.",
    SERVED: "One run per build of `adder-all`: every task's champion behind one endpoint, built by "
                    "`adder evaluate` whenever a champion moves.",
}


def open_experiment(name: str, artifact_location: str | None) -> None:
    """Creates the experiment, tagged as model training and described; tags one made before that as well
    (its description only if it has none: someone may have written one in the UI)."""
    tags = {KIND: MODEL_TRAINING, NOTE: EXPERIMENT_NOTES.get(name, "")}
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        try:
            mlflow.create_experiment(name, artifact_location=artifact_location, tags=tags)
            return
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a parallel stage (a queued sweep) made it
                raise
            found = mlflow.get_experiment_by_name(name)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        if found.tags.get(key) != value and (key == KIND or key not in found.tags):
            client.set_experiment_tag(found.experiment_id, key, value)


def git_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def run_tags(root: Path, **extra: str) -> dict[str, str]:
    """Where a run comes from: git commit, DVC stage and, inside `dvc exp run`, the DVC experiment."""
    tags = {"git_commit": git_commit(root), "dvc_stage": os.environ.get("DVC_STAGE", "(outside dvc)")}
    if name := dvc_experiment():
        tags |= {"dvc_experiment": name, "dvc_baseline": os.environ.get("DVC_EXP_BASELINE_REV", "unknown")}
    return {**tags, **extra}


# --- naming and describing runs, so that the UI tells them apart without opening each


def dvc_experiment() -> str | None:
    """The DVC experiment this stage runs in: `dvc exp run` (queued or not) sets DVC_EXP_NAME, and
    DVC_EXP_BASELINE_REV to the commit it started from; a plain `dvc repro` sets neither."""
    return os.environ.get("DVC_EXP_NAME") or None


def run_name(name: str, changes: dict | None = None) -> str:
    """name, or inside a DVC experiment 'name key=value ... (dvc-experiment)': a sweep's runs differ."""
    if not (experiment := dvc_experiment()):
        return name
    return " ".join([name, *settings_text(changes or {}), f"({experiment})"])


def settings_text(settings: dict) -> list[str]:
    """['units=[64]', 'reverse=true', 'schedule=cosine']: as `dvc exp run -S` takes them."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
            for key, value in settings.items()]


def experiment_changes(root: Path, exp_name: str) -> dict:
    """Inside a DVC experiment, the seed and the settings of exp_name and of its task that differ from
    params.yaml at the baseline commit (what `dvc exp run -S` set); {} elsewhere or if git cannot tell."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if not dvc_experiment() or not baseline:
        return {}
    shown = subprocess.run(["git", "show", f"{baseline}:./{PARAMS_FILE}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        return {}
    before = settings_of(yaml.safe_load(shown.stdout) or {}, exp_name)
    now = settings_of(yaml.safe_load((root / PARAMS_FILE).read_text()) or {}, exp_name)
    keys = [*now, *(k for k in before if k not in now)]
    return {key: now.get(key) for key in keys if before.get(key) != now.get(key)}


def settings_of(raw: dict, exp_name: str) -> dict:
    """The seed, an experiment's settings and its task's (as task.<key>), from raw params.yaml contents."""
    experiment = (raw.get("experiments") or {}).get(exp_name) or {}
    task = (raw.get("tasks") or {}).get(experiment.get("task")) or {}
    return {"seed": raw.get("seed"), **experiment, **{f"task.{key}": value for key, value in task.items()}}


def task_words(task: Task) -> str:
    """'2 operands of 1 to 3 digits joined by +', '2 to 3 operands of 1 to 2 digits joined by +, - or *, ...'."""
    count = f"{task.min_terms} to {task.terms}" if task.min_terms not in (None, task.terms) else f"{task.terms}"
    if task.digits is None:
        values = f"in {task.min_value}..{task.max_value}"
    elif task.digits == 1:
        values = "of 1 digit"
    else:
        values = f"of {'exactly' if task.fixed_width else '1 to'} {task.digits} digits"
    ops = task.ops if len(task.ops) == 1 else f"{', '.join(task.ops[:-1])} or {task.ops[-1]}"
    brackets = ", one bracketed span or none" if task.brackets else ""
    return f"{count} operands {values} joined by {ops}{brackets}"


def run_description(exp_name: str, params: Params, words: str, changes: dict | None = None) -> str:
    """A training run's description (markdown): what it learns, with which model, and what it is compared
    with: the task's other experiments of the same model (the settings where they differ), else of any."""
    exp, changes = params.experiment(exp_name), changes or {}
    task = params.tasks[exp.task]
    lines = [exp.description] if exp.description else []
    lines.append(f"**{exp_name}** learns `{exp.task}` ({task_words(task)}; {task.train_size:,} training problems) "
                 f"with `{exp.model}`, {words} (units {', '.join(map(str, exp.units))}; "
                 f"{exp.framing}), over {exp.epochs} epochs.")
    others = {name: other for name, other in params.experiments.items() if other.task == exp.task and name != exp_name}
    same_model = {name: other for name, other in others.items() if other.model == exp.model}
    if same_model:
        mine = exp.model_dump(exclude={"description"})
        differ = {key: value for key, value in mine.items()
                  if any(other.model_dump()[key] != value for other in same_model.values())}
        settings = ", ".join(settings_text(differ)) or "the same settings"
        lines.append(f"Compared with {', '.join(same_model)} (same task and model): here {settings}.")
    elif others:
        models = sorted({f"`{other.model}`" for other in others.values()})
        lines.append(f"Compares `{exp.model}` with {', '.join(models)} on the same problems ({', '.join(others)}).")
    else:
        lines.append(f"The only experiment on `{exp.task}`.")
    if experiment := dvc_experiment():
        queued = f"with {', '.join(settings_text(changes))}" if changes else "with params.yaml as committed"
        lines.append(f"DVC experiment `{experiment}`, run {queued}.")
    return "\n\n".join(lines)


def training_run(root: Path, exp_name: str, params: Params, words: str) -> tuple[str, dict[str, str]]:
    """A training run's name and tags: task, model, description (`words` say what the model is) and, inside
    a DVC experiment, the settings it changed (tag dvc_changes)."""
    exp = params.experiment(exp_name)
    changes = experiment_changes(root, exp_name)
    tags = run_tags(root, task=exp.task, model=exp.model, framing=exp.framing,
                    **{NOTE: run_description(exp_name, params, words, changes)})
    if changes:
        tags["dvc_changes"] = " ".join(settings_text(changes))
    return run_name(exp_name, changes), tags


# --- runs whose process died: found by the pid and host a run is tagged with while a process works on it

PID, HOST, TRAINED = "adder.pid", "adder.host", "adder.trained"  # TRAINED: "<status> <end time>" while resumed


def process_tags() -> dict[str, str]:
    """Which process is working on a run, so that the next one can tell whether it died."""
    return {PID: str(os.getpid()), HOST: socket.gethostname()}


def died(tags: dict[str, str]) -> bool:
    """Whether the process a RUNNING run is tagged with is gone: only a process on this host can tell."""
    if tags.get(HOST) != socket.gethostname() or not tags.get(PID, "").isdigit():
        return False
    pid = int(tags[PID])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def end_dead_runs(exp_name: str) -> list[str]:
    """Ends the runs of exp_name left RUNNING by a process that died (kill -9, a crash, a lost machine):
    one killed in training as KILLED, one killed while evaluate had resumed it as training had left it.
    Returns what it did, one line per run."""
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(RUNS)
    if experiment is None:
        return []
    ended = []
    for run in client.search_runs([experiment.experiment_id], max_results=1000,
                                  filter_string=f"params.experiment = '{exp_name}' and attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if not died(tags):
            continue
        if TRAINED in tags:  # trained, then killed while being scored: its training's status and end stand
            status, end_time = tags[TRAINED].split()
            client.set_terminated(run.info.run_id, status=status, end_time=int(end_time))
            client.set_tag(run.info.run_id, "adder.interrupted", "evaluate")
        else:
            client.set_terminated(run.info.run_id, status="KILLED")
            status = "KILLED"
        ended.append(f"MLflow run {run.info.run_id} of {exp_name} was left RUNNING by process {tags[PID]}, "
                     f"which died; marked {status}")
    return ended


@contextmanager
def resume_run(run_id: str):
    """Reopens the run that training started, so one run holds an experiment's whole story. Its status and
    end time go back to training's afterwards, so that its duration in the UI is the training's."""
    client = mlflow.MlflowClient()
    try:
        trained = client.get_run(run_id).info
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
            raise
        raise AdderError(f"MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()}; retrain it: "
                         "dvc repro --force train@<experiment>") from None
    try:
        with mlflow.start_run(run_id=run_id) as run:
            if trained.end_time:
                mlflow.set_tags({**process_tags(), TRAINED: f"{trained.status} {trained.end_time}"})
            yield run
    finally:
        if trained.end_time:
            client.set_terminated(run_id, status=trained.status, end_time=trained.end_time)
            client.delete_tag(run_id, TRAINED)


def log_epoch(epoch: int, logs: dict[str, float]) -> None:
    """Logs an epoch's loss, accuracy and held-out scores to the active run."""
    mlflow.log_metrics(logs, step=epoch)


SCHEMA_ROWS = 100


def log_dataset(frame: pd.DataFrame, root: Path, path: Path, context: str):
    """Logs data/<task>/<split>.csv as the dataset <task>-<split> of the active run, in context (training,
    validation, test); returns it. Its source is the project-relative path, its digest the file's sha256
    (the one data/<task>/summary.json records) cut to the 36 characters MLflow keeps."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:36]
    with warnings.catch_warnings():  # the stage's stderr holds errors only
        # MLflow registers its local-file source twice, then warns that a path fits both.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        # Answers are never missing: the hint about integer columns does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(frame, source=path.relative_to(root).as_posix(),
                                          name=f"{path.parent.name}-{path.stem}", digest=digest)
        # MLflow would infer the schema from every value (a quarter of a second for 50,000 problems); each
        # column holds one type, which its first rows show.
        dataset.schema = mlflow.models.infer_signature(frame.head(SCHEMA_ROWS)).inputs
        log_input_once_stored(dataset, context)
    return dataset


def log_input_once_stored(dataset, context: str, attempts: int = 5) -> None:
    """mlflow.log_input, again when it lost a race: MLflow's store looks a dataset up and then inserts it, so
    when two runs (a queued sweep's workers) first log one dataset at once, one insert breaks the unique key
    and its whole transaction rolls back. Once the other's insert is committed, the lookup finds it."""
    for attempt in range(attempts):
        try:
            return mlflow.log_input(dataset, context=context)
        except mlflow.exceptions.MlflowException as e:
            if attempt == attempts - 1 or not re.search(r"unique|duplicate key", str(e), re.IGNORECASE):
                raise
            time.sleep(0.1 * (attempt + 1))


def log_test_metrics(metrics: dict[str, float], dataset, model_uris: list[str]) -> None:
    """Logs test figures to the active run and to each of its logged models, against the test dataset, so
    the experiment's Models tab and each model's page show them; one timestamp, one point per metric."""
    timestamp = int(time.time() * 1000)
    for uri in model_uris:
        mlflow.log_metrics(metrics, model_id=uri.removeprefix("models:/"), dataset=dataset, timestamp=timestamp)


def tensorflow_distribution() -> str:
    """The installed distribution that provides the module `tensorflow`: tensorflow-cpu, tensorflow (macOS,
    Linux on ARM, GPUs) or another build. They all install the same module, so its name is looked up."""
    import importlib.metadata

    providers = sorted(set(importlib.metadata.packages_distributions().get("tensorflow", [])))
    return re.sub(r"[-_.]+", "-", providers[0]).lower() if providers else "tensorflow"


def pinned(*names: str) -> list[str]:
    """pip requirements pinning each distribution's installed version; "tensorflow" stands for whichever
    distribution provides the module (tensorflow_distribution)."""
    import importlib.metadata

    names = tuple(tensorflow_distribution() if name == "tensorflow" else name for name in names)
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def log_keras_model(model, codec_spec: dict, name: str) -> str:
    """Logs the model in MLflow's keras flavor, which loads on any Keras backend, with its codec in the
    model's metadata, named `name` (its experiment's); returns the model URI."""
    import keras
    import mlflow.keras

    from pipeline.backend import REQUIREMENTS

    info = mlflow.keras.log_model(
        model,
        name=name,
        metadata={"codec": codec_spec, "keras_backend": keras.backend.backend()},
        # Explicit requirements skip MLflow's slow inference of them.
        pip_requirements=pinned(*REQUIREMENTS[keras.backend.backend()], "keras"),
    )
    return info.model_uri
