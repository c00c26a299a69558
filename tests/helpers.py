"""Helpers shared by the test modules, so that none borrows them from another: the project's paths, its
commands run as real processes, tiny projects and MLflow servers to run them on, and the stand-ins and
builders the unit tests share. pytest puts tests/ on sys.path: test modules import it as `helpers`."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from pipeline.codec import CharCodec, Limits
from pipeline.config import Task, parse_params
from pipeline.errors import AdderError
from pipeline.registry import register_and_crown

PROJECT = Path(__file__).resolve().parents[1]
# The venv's `adder`, `dvc` and `mlflow`: the project's .venv, else the one running pytest.
BIN = PROJECT / ".venv" / "bin" if (PROJECT / ".venv" / "bin" / "adder").exists() else Path(sys.executable).parent
GIT = ["git", "-c", "user.name=adder test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]

# Same shape as the real params.yaml (task and experiment names, one mapping and one seq2seq
# experiment) but sizes that make each stage take seconds.
TINY = {
    "seed": 1,
    "backend": "jax",
    "tasks": {
        "mapping": {"terms": 2, "min_value": 1, "max_value": 100,
                    "train_size": 200, "val_size": 50, "test_size": 50},
        "seed": {"terms": 2, "min_value": 1, "max_value": 10, "disjoint": False,
                 "train_size": 100, "val_size": 20, "test_size": 50},
    },
    "experiments": {
        "mapping-naive_mlp": {"task": "mapping", "model": "naive_mlp", "units": [4, 2],
                              "epochs": 2, "samples_per_epoch": 50, "batch_size": 5},
        "seed-seq2seq": {"task": "seed", "model": "seq2seq", "units": [16, 8],
                         "epochs": 3, "samples_per_epoch": 100, "batch_size": 10},
    },
}
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------------
# commands as real processes


def cli_env(tracking_uri: str | None = None) -> dict[str, str]:
    """The environment of every command: the venv first on PATH, no inherited MLflow / DVC / adder
    settings (so the local store is the temp repo's sqlite file unless tracking_uri is given), commands
    in warm forks as `make run` runs them."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "GIT_", "ADDER_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["ADDER_WARM"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a command to its end in cwd, output captured, in cli_env() unless env is given."""
    return subprocess.run(args, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def adder(*args: str, cwd: Path, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs the venv's `adder` with args, as run() runs any command."""
    return run([str(BIN / "adder"), *args], cwd, env, timeout)


def shown(result: subprocess.CompletedProcess) -> str:
    """A command's outcome for assertion messages."""
    return (f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")


def one_error_line(result: subprocess.CompletedProcess, says: str = "") -> str:
    """The CLI's contract for user errors: exit 2 and exactly one line 'error: ...' (holding says) on stderr."""
    assert result.returncode == 2, shown(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown(result)
    assert says in lines[0], shown(result)
    return lines[0]


def free_port() -> int:
    """A local port nothing listens on, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# projects and what they write


def write_params(folder: Path, params: dict) -> None:
    """Writes params as folder's params.yaml, keys in the given order."""
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(folder: Path, params: dict) -> Path:
    """A git + DVC repo holding the project's pipeline/ sources, dvc.yaml, plot templates and the given params."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT / "pipeline", folder / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / ".gitignore", folder / ".gitignore")
    shutil.copy(PROJECT / "dvc.yaml", folder / "dvc.yaml")
    write_params(folder, params)
    for args in (GIT + ["init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        result = run(args, folder, timeout=120)
        assert result.returncode == 0, shown(result)
    shutil.copytree(PROJECT / ".dvc" / "plots", folder / ".dvc" / "plots")
    for args in (GIT + ["add", "-A"], GIT + ["commit", "-q", "-m", "tiny adder project"]):
        result = run(args, folder, timeout=120)
        assert result.returncode == 0, shown(result)
    return folder


def read_json(path: Path) -> dict:
    """A JSON file's content."""
    return json.loads(path.read_text())


def is_timing(key: str) -> bool:
    """Wall-clock measurements (train_seconds, seconds, seconds_to_99...): the only values allowed to differ."""
    return key == "train_seconds" or key.startswith("seconds")


def without_timing(data: dict) -> dict:
    """data less its wall-clock measurements, to compare runs that must agree on everything else."""
    return {k: v for k, v in data.items() if not is_timing(k)}


def csv_without_timing(path: Path) -> list[dict]:
    """A CSV file's rows, each less its wall-clock measurements."""
    with path.open(newline="") as f:
        return [without_timing(row) for row in csv.DictReader(f)]


def without_clock(history: list[dict]) -> list[dict]:
    """A training history less each epoch's seconds, the one value two identical trainings differ in."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


# --------------------------------------------------------------------------------------------------
# MLflow: servers, stores and what a training run must hold


@dataclass
class Server:
    """A started `mlflow server`: its URI, process and folder (which holds its log)."""

    uri: str
    process: subprocess.Popen
    folder: Path
    ready: bool = False

    def log(self) -> str:
        """The end of the server's log, for failure messages."""
        return (self.folder / "server.log").read_text()[-4000:]

    def wait_ready(self, timeout: float = 120) -> None:
        """Waits for /health to answer, so tests can work while the server starts; raises if it dies or hangs."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    self.ready = response.status == 200
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server not healthy after {timeout}s:\n{self.log()}") from None
                time.sleep(0.25)


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_store_uri: str):
    """`mlflow server` on a free local port with the given backend store and a local artifacts destination,
    as docs/scale-out.md starts it (there the destination is s3://). Starts in the background: wait_ready()."""
    port = free_port()
    env = cli_env()
    # The server's job runner (7 Huey worker processes importing MLflow) would compete for the
    # test machine's CPUs and nothing here needs it.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend_store_uri, "--serve-artifacts", "--artifacts-destination", str(folder / "art")],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown ends the server and its workers
    )
    try:
        yield Server(f"http://127.0.0.1:{port}", process, folder)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any worker left behind in the group
        process.wait(10)
        log.close()


@contextlib.contextmanager
def tracking_uri(uri: str):
    """Points this process's MLflow at uri for the block (mlflow.set_tracking_uri also sets the env var)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def runs_by_name(client, experiment: str) -> dict[str, list]:
    """An MLflow experiment's runs grouped by run name, to count and find each stage's runs."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    grouped: dict[str, list] = {}
    for r in client.search_runs([found.experiment_id], max_results=1000):
        grouped.setdefault(r.info.run_name, []).append(r)
    return grouped


def check_training_run(client, run, name: str, repo: Path) -> None:
    """What one TINY experiment's MLflow run must hold after train + evaluate."""
    exp = TINY["experiments"][name]
    assert run.info.status == "FINISHED"
    assert run.info.run_id == read_json(repo / "models" / name / "run.json")["run_id"]
    params = run.data.params
    for key in ("task", "model", "epochs", "batch_size", "samples_per_epoch"):
        assert params[key] == str(exp[key]), (key, params)
    assert params["seed"] == str(TINY["seed"])
    assert params["experiment"] == name
    assert params["task.train_size"] == str(TINY["tasks"][exp["task"]]["train_size"])
    assert run.data.tags["task"] == exp["task"] and run.data.tags["model"] == exp["model"]
    # Described for the UI: what it learns, with which model.
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**{name}** learns `{exp['task']}` (") and f"with `{exp['model']}`" in note, note
    # One point per epoch, at steps 1..epochs.
    for metric in ("loss", "val_exact_match"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == list(range(1, exp["epochs"] + 1)), (metric, history)
    metrics = read_json(repo / "metrics" / f"{name}.json")
    assert run.data.metrics["test_exact_match"] == pytest.approx(metrics["exact_match"])
    assert run.data.metrics["train_seconds"] > 0
    if "char_accuracy" in metrics:
        assert run.data.metrics["test_char_accuracy"] == pytest.approx(metrics["char_accuracy"])
    if "rmse" in metrics:
        assert run.data.metrics["test_rmse"] == pytest.approx(metrics["rmse"])
    # Its duration is training's: it ends after the last epoch, before evaluate logs the test metrics.
    tested = client.get_metric_history(run.info.run_id, "test_exact_match")
    last_epoch = max(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss"))
    assert last_epoch <= run.info.end_time < min(m.timestamp for m in tested), (run.info, tested)
    # The three splits as datasets: the project-relative CSV as source, summary.json's sha256 as digest.
    summary = read_json(repo / "data" / exp["task"] / "summary.json")
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == sorted(f"{exp['task']}-{split}" for split in SPLITS), inputs
    for split, context in zip(SPLITS, ("training", "validation", "test")):
        logged = inputs[f"{exp['task']}-{split}"]
        assert {t.key: t.value for t in logged.tags}.get("mlflow.data.context") == context
        assert logged.dataset.digest == summary["splits"][split]["sha256"][:36]
        assert json.loads(logged.dataset.source) == {"uri": f"data/{exp['task']}/{split}.csv"}
        assert json.loads(logged.dataset.schema)["mlflow_colspec"] == [
            {"type": "string", "name": "problem", "required": True},
            {"type": "long", "name": "answer", "required": True}]
    assert {"samples.json", "breakdown.json", "figures"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/accuracy_vs_epoch.png" in figures and any("breakdown_" in f for f in figures), figures
    # Breakdowns are tables and figures, not metrics: the chart view opens on the headline ones.
    assert not any("/" in key for key in run.data.metrics), sorted(run.data.metrics)
    # The models are LoggedModels of this run, named after the experiment, holding its test metrics
    # against the test split.
    assert client.get_logged_model(read_json(repo / "models" / name / "run.json")["model_uri"]
                                   .removeprefix("models:/")).name == name
    run_info = read_json(repo / "models" / name / "run.json")
    test_set = (f"{exp['task']}-test", summary["splits"]["test"]["sha256"][:36])
    serving = client.search_logged_models([run.info.experiment_id],
                                          f"source_run_id = '{run.info.run_id}' AND name = '{name}-serving'")
    assert len(serving) == (exp["model"] not in ("naive_lstm", "naive_mlp"))  # logged by evaluate, for sequence models
    for model_uri in (run_info["model_uri"], *(f"models:/{m.model_id}" for m in serving)):
        assert model_uri.startswith("models:/")
        model = client.get_logged_model(model_uri.removeprefix("models:/"))
        assert model.source_run_id == run.info.run_id
        scores = {m.key: m for m in model.metrics if (m.dataset_name, m.dataset_digest) == test_set}
        assert scores["test_exact_match"].value == pytest.approx(metrics["exact_match"]), model.metrics


def candidate(task: str, exact_match: float, test_sha256: str = "same test set") -> tuple[str, dict]:
    """A finished run with its test score and a logged model, registered as evaluate does: (run id, decision)."""
    with mlflow.start_run() as run:
        mlflow.log_metric("test_exact_match", exact_match)
        mlflow.set_tag("test_sha256", test_sha256)
        model = mlflow.initialize_logged_model(name=f"{task}-serving", source_run_id=run.info.run_id)
        return run.info.run_id, register_and_crown(task, f"models:/{model.model_id}", run.info.run_id,
                                                   exact_match, test_sha256)


def champion(client, task: str = "add3") -> str:
    """The version number of the task's champion in the registry."""
    return str(client.get_model_version_by_alias(f"adder-{task}", "champion").version)


# --------------------------------------------------------------------------------------------------
# stand-ins and builders for unit tests


CODEC = CharCodec(Limits.of(Task(terms=2, digits=2, train_size=1, val_size=1, test_size=1)), encoding="integer")


class ExactModel:
    """Stands in for a trained model: decodes its input back to expressions and outputs their true sums."""

    def __init__(self, codec: CharCodec):
        self.codec = codec

    def predict_on_batch(self, x):
        sums = [sum(int(term) for term in expression.split("+")) for expression in self.codec.decode_inputs(x)]
        return self.codec.encode_targets(np.array(sums))

    def predict(self, x, **kwargs):
        return self.predict_on_batch(x)


def task_with(**defaults) -> Callable[..., Task]:
    """A module's task(**kw): its defaults overridden by kw, so that each test names only what it varies."""

    def task(**kw) -> Task:
        return Task(**{**defaults, **kw})

    return task


def error_of(params) -> str:
    """parse_params' error for params, checked to be one line as every user error is."""
    with pytest.raises(AdderError) as e:
        parse_params(params)
    message = str(e.value)
    assert "\n" not in message
    return message
