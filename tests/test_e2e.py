"""End-to-end tests: real `dvc repro`, real `adder` processes, a real MLflow store and tracking server.

Nothing is mocked. Two tiny projects are built once per module and run concurrently (the machine
spends most of each `adder` call importing TensorFlow and MLflow, so overlap halves the wait):

* repo A: a git + DVC repo running `dvc repro` on a tiny params.yaml, tracked in its own sqlite store;
* repo B: the same params, run stage by stage with `adder generate/train/evaluate` against a real
  `mlflow server`; it must reproduce repo A byte for byte (determinism) and fill the server.

The failure-mode tests (dead tracking server, invalid params) build their own small projects.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
# The venv's `adder`, `dvc` and `mlflow`: the project's .venv, else the one running pytest.
BIN = PROJECT / ".venv" / "bin" if (PROJECT / ".venv" / "bin" / "adder").exists() else Path(sys.executable).parent

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
TASKS = tuple(TINY["tasks"])
EXPERIMENTS = tuple(TINY["experiments"])
SEQ2SEQ = "seed-seq2seq"
SPLITS = ("train", "val", "test")

GIT = ["git", "-c", "user.name=adder e2e", "-c", "user.email=e2e@example.invalid", "-c", "commit.gpgsign=false"]


# --------------------------------------------------------------------------------------------------
# helpers


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


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def run_concurrently(*calls: tuple) -> list[subprocess.CompletedProcess]:
    """Runs several (args, cwd, env) commands at once; results in the same order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: run(*call), calls))


def shown(result: subprocess.CompletedProcess) -> str:
    """A command's outcome for assertion messages."""
    return (f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's contract for user errors: exit 2 and exactly one line 'error: ...' on stderr."""
    assert result.returncode == 2, shown(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown(result)
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def is_timing(key: str) -> bool:
    """Wall-clock measurements (train_seconds, seconds, seconds_to_99...): the only values allowed to differ."""
    return key == "train_seconds" or key.startswith("seconds")


def without_timing(data: dict) -> dict:
    return {k: v for k, v in data.items() if not is_timing(k)}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def csv_without_timing(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [without_timing(row) for row in csv.DictReader(f)]


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


def git_head(repo: Path) -> str:
    return run(GIT + ["rev-parse", "HEAD"], repo).stdout.strip()


@contextlib.contextmanager
def tracking_uri(uri: str):
    """Points this process's MLflow at uri for the block (mlflow.set_tracking_uri also sets the env var)."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def runs_by_name(client, experiment: str) -> dict[str, list]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    grouped: dict[str, list] = {}
    for r in client.search_runs([found.experiment_id], max_results=1000):
        grouped.setdefault(r.info.run_name, []).append(r)
    return grouped


def all_run_ids(client) -> set[str]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(ids, max_results=10000)} if ids else set()


def check_training_run(client, run, name: str, repo: Path) -> None:
    """What one experiment's MLflow run must hold after train + evaluate."""
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
    assert "samples.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # The models are LoggedModels of this run, holding its test metrics against the test split.
    run_info = read_json(repo / "models" / name / "run.json")
    test_set = (f"{exp['task']}-test", summary["splits"]["test"]["sha256"][:36])
    serving = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run.info.run_id}' AND name = 'serving'")
    assert len(serving) == (exp["model"] not in ("naive_lstm", "naive_mlp"))  # logged by evaluate, for sequence models
    for model_uri in (run_info["model_uri"], *(f"models:/{m.model_id}" for m in serving)):
        assert model_uri.startswith("models:/")
        model = client.get_logged_model(model_uri.removeprefix("models:/"))
        assert model.source_run_id == run.info.run_id
        scores = {m.key: m for m in model.metrics if (m.dataset_name, m.dataset_digest) == test_set}
        assert scores["test_exact_match"].value == pytest.approx(metrics["exact_match"]), model.metrics


# --------------------------------------------------------------------------------------------------
# fixtures


@dataclass
class Server:
    uri: str
    process: subprocess.Popen
    folder: Path
    ready: bool = False

    def log(self) -> str:
        return (self.folder / "server.log").read_text()[-4000:]

    def wait_ready(self, timeout: float = 120) -> None:
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


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on a sqlite store, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'srv.db'}") as server:
        yield server


@dataclass
class Pipelines:
    repo: Path  # repo A: `dvc repro`, local sqlite store
    repro: subprocess.CompletedProcess
    server_repo: Path  # repo B: adder commands against the tracking server
    server_steps: list[subprocess.CompletedProcess] = field(default_factory=list)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, tracking_server) -> Pipelines:
    repo = make_repo(tmp_path_factory.mktemp("repo") / "adder", TINY)
    server_repo = make_repo(tmp_path_factory.mktemp("server-repo") / "adder", TINY)

    def by_hand() -> list[subprocess.CompletedProcess]:
        import mlflow

        tracking_server.wait_ready()
        # An experiment made before the project tagged its experiments: the stages tag it too.
        mlflow.MlflowClient(tracking_uri=tracking_server.uri).create_experiment("adder")
        env = cli_env(tracking_server.uri)
        steps = []
        commands = ([["adder", "generate", t] for t in TASKS] + [["adder", "train", e] for e in EXPERIMENTS]
                    + [["adder", "evaluate", *EXPERIMENTS]])
        for args in commands:
            steps.append(run(args, server_repo, env))
            if steps[-1].returncode != 0:
                break
        return steps

    with ThreadPoolExecutor(2) as pool:
        repro = pool.submit(run, ["dvc", "repro"], repo, cli_env(), 600)
        steps = pool.submit(by_hand)
        return Pipelines(repo, repro.result(), server_repo, steps.result())


@pytest.fixture(scope="module")
def repo(pipelines) -> Path:
    """Repo A after a successful `dvc repro`."""
    assert pipelines.repro.returncode == 0, shown(pipelines.repro)
    return pipelines.repo


@pytest.fixture(scope="module")
def store(repo):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


@pytest.fixture(scope="module")
def predictions(repo, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """`adder predict` calls on repo A, run at once: one expression with the seq2seq model loaded back
    from MLflow, a file of expressions with one bad line for the default model (the best seq2seq
    experiment: the same one, from its folder), and an MLflow URI that holds no model."""
    lines = tmp_path_factory.mktemp("predict") / "expressions.txt"
    lines.write_text("3+4\nthree+four\n 10 + 2 \n3+4\n")
    run_info = read_json(repo / "models" / SEQ2SEQ / "run.json")
    env = cli_env()
    calls = {
        "mlflow": (["adder", "predict", "3+4", "--model", run_info["model_uri"]], repo, env),
        "file": (["adder", "predict", "--file", str(lines)], repo, env),
        "no model": (["adder", "predict", "3+4", "--model", f"runs:/{run_info['run_id']}/no-such-model"], repo, env),
    }
    return dict(zip(calls, run_concurrently(*calls.values())))


# --------------------------------------------------------------------------------------------------
# 1. a full `dvc repro` in a fresh git + DVC repo


@pytest.mark.e2e
def test_repro_writes_every_output(repo, pipelines):
    assert "Running stage 'compare'" in pipelines.repro.stdout, shown(pipelines.repro)
    for task in TASKS:
        for split in SPLITS:
            lines = (repo / "data" / task / f"{split}.csv").read_text().splitlines()
            assert lines[0] == "problem,answer"
            assert len(lines) - 1 == TINY["tasks"][task][f"{split}_size"]
        summary = read_json(repo / "data" / task / "summary.json")
        assert {s: v["size"] for s, v in summary["splits"].items()} == {
            s: TINY["tasks"][task][f"{s}_size"] for s in SPLITS}
    for name in EXPERIMENTS:
        for file in ("model.keras", "codec.json", "history.csv", "run.json"):
            assert (repo / "models" / name / file).is_file(), file
        assert (repo / "metrics" / f"{name}.json").is_file()
        history = read_json(repo / "evaluation" / f"{name}.json")["history"]
        assert [point["epoch"] for point in history] == list(range(1, TINY["experiments"][name]["epochs"] + 1))
    with (repo / "plots" / "curves.csv").open() as f:
        curves = Counter(row["experiment"] for row in csv.DictReader(f))
    assert curves == {name: exp["epochs"] for name, exp in TINY["experiments"].items()}
    report = (repo / "reports" / "comparison.md").read_text()
    for name in EXPERIMENTS:
        assert f"| {name} |" in report
    assert (repo / "dvc.lock").is_file()
    # The local store lives at the project root, not in the cwd's ./mlruns.
    assert (repo / "mlflow.db").is_file() and (repo / "mlartifacts").is_dir()
    assert not (repo / "mlruns").exists()


@pytest.mark.e2e
def test_repro_metrics_files(repo):
    for name, exp in TINY["experiments"].items():
        metrics = read_json(repo / "metrics" / f"{name}.json")
        if exp["model"] == "seq2seq":
            assert 0 <= metrics["exact_match"] <= 1 and 0 <= metrics["char_accuracy"] <= 1, metrics
            assert "rmse" not in metrics
        else:
            assert metrics["rmse"] >= 0 and 0 <= metrics["exact_match"] <= 1, metrics
        assert metrics["train_seconds"] > 0
        # The metrics file holds the headline figures only; sizes and breakdowns are in evaluation/.
        assert set(metrics) <= {"exact_match", "char_accuracy", "rmse", "train_seconds"}, metrics
        evaluation = read_json(repo / "evaluation" / f"{name}.json")
        assert evaluation["exact_match"] == metrics["exact_match"]
        assert evaluation["test_size"] == TINY["tasks"][exp["task"]]["test_size"]
        assert evaluation["parameters"] > 0


@pytest.mark.e2e
def test_repro_tracks_one_mlflow_run_per_experiment(repo, store):
    runs = runs_by_name(store, "adder")
    assert Counter({name: len(found) for name, found in runs.items()}) == Counter(dict.fromkeys(EXPERIMENTS, 1))
    head = git_head(repo)
    for name in EXPERIMENTS:
        run_ = runs[name][0]
        check_training_run(store, run_, name, repo)
        assert run_.data.tags["git_commit"] == head
        assert run_.data.tags["dvc_stage"] == f"train@{name}"
    datasets = runs_by_name(store, "adder-datasets")
    assert sorted(datasets) == sorted(f"generate-{t}" for t in TASKS)
    reports = runs_by_name(store, "adder-reports")
    assert list(reports) == ["compare"] and len(reports["compare"]) == 1
    # The UI opens every experiment as model training, not in its GenAI view.
    for experiment in ("adder", "adder-datasets", "adder-reports"):
        assert store.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "comparison.md" in [a.path for a in store.list_artifacts(reports["compare"][0].info.run_id)]


@pytest.mark.e2e
def test_logged_models_load_back_and_match_the_saved_ones(repo, tmp_path):
    import keras
    import mlflow
    import mlflow.keras
    import numpy as np

    from pipeline.codec import load_codec
    from pipeline.problems import read_csv

    with tracking_uri(f"sqlite:///{repo / 'mlflow.db'}"):
        for name, exp in TINY["experiments"].items():
            model_uri = read_json(repo / "models" / name / "run.json")["model_uri"]
            info = mlflow.models.get_model_info(model_uri)
            # MLflow's keras flavor (it loads on any backend), with the backend and the codec in its metadata.
            assert info.flavors["keras"]["keras_backend"] == "jax"  # TINY trains on the default backend
            assert info.metadata["codec"] == read_json(repo / "models" / name / "codec.json")
            logged = mlflow.keras.load_model(model_uri)
            codec = load_codec(repo / "models" / name / "codec.json")
            x = codec.encode_inputs(read_csv(repo / "data" / exp["task"] / "test.csv").text[:8])
            predicted = np.asarray(logged.predict(x, verbose=0))
            if exp["model"] == "seq2seq":
                assert predicted.shape == (8, codec.out_width, codec.n_symbols)
            else:
                assert predicted.shape == (8, 1)
            saved = keras.models.load_model(repo / "models" / name / "model.keras", compile=False)
            np.testing.assert_allclose(predicted, saved.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_predict_answers_an_expression_with_the_model_from_mlflow(predictions):
    result = predictions["mlflow"]
    assert result.returncode == 0, shown(result)
    assert re.fullmatch(r"\d*\n", result.stdout), shown(result)  # the seq2seq model's digits, one line


@pytest.mark.e2e
def test_predict_file_reports_a_bad_line_and_answers_the_others(predictions):
    result = predictions["file"]
    error = one_error_line(result)
    assert error.startswith("error: line 2: ") and "three+four" in error, error
    answers = result.stdout.split("\n")
    assert len(answers) == 5 and answers[-1] == "", shown(result)  # 4 lines, newline-terminated
    # Good lines answered, the bad one left empty so answers stay aligned with the file's lines.
    assert re.fullmatch(r"\d*", answers[0]) and answers[1] == "" and re.fullmatch(r"\d*", answers[2]), answers
    assert answers[3] == answers[0]  # the same expression gets the same answer
    # The model saved in models/<experiment>/ answers like the one logged to MLflow.
    assert answers[0] + "\n" == predictions["mlflow"].stdout


@pytest.mark.e2e
def test_predict_with_an_mlflow_uri_holding_no_model_is_a_one_line_error(predictions):
    error = one_error_line(predictions["no model"])
    assert "no-such-model" in error, error


# --------------------------------------------------------------------------------------------------
# 2. a second `dvc repro` has nothing to do


@pytest.mark.e2e
def test_second_repro_does_nothing(repo, store):
    outputs = [repo / "dvc.lock", repo / "reports" / "comparison.md",
               *(repo / "metrics" / f"{n}.json" for n in EXPERIMENTS),
               *(repo / "models" / n / "run.json" for n in EXPERIMENTS)]
    before = {p: p.read_bytes() for p in outputs}
    runs_before = all_run_ids(store)
    result = run(["dvc", "repro"], repo, cli_env(), 300)
    assert result.returncode == 0, shown(result)
    output = result.stdout + result.stderr
    assert "Data and pipelines are up to date." in output, shown(result)
    assert "Running stage" not in output, shown(result)
    stages = [f"generate@{t}" for t in TASKS] + [f"train@{e}" for e in EXPERIMENTS]
    for stage in stages + ["evaluate", "compare"]:
        assert f"Stage '{stage}' didn't change, skipping" in output, (stage, shown(result))
    assert {p: p.read_bytes() for p in outputs} == before
    assert all_run_ids(store) == runs_before


# --------------------------------------------------------------------------------------------------
# 3. determinism: the same params in another repo give the same bytes and scores


@pytest.mark.e2e
def test_same_params_reproduce_data_and_metrics(repo, pipelines):
    for step in pipelines.server_steps:
        assert step.returncode == 0, shown(step)
    assert len(pipelines.server_steps) == len(TASKS) + len(EXPERIMENTS) + 1
    other = pipelines.server_repo
    for task in TASKS:
        for split in SPLITS:
            path = Path("data", task, f"{split}.csv")
            assert (other / path).read_bytes() == (repo / path).read_bytes(), path
        assert read_json(other / "data" / task / "summary.json") == read_json(repo / "data" / task / "summary.json")
    for name in EXPERIMENTS:
        assert (without_timing(read_json(other / "metrics" / f"{name}.json"))
                == without_timing(read_json(repo / "metrics" / f"{name}.json"))), name
        assert (without_timing(read_json(other / "evaluation" / f"{name}.json"))["breakdown"]
                == without_timing(read_json(repo / "evaluation" / f"{name}.json"))["breakdown"]), name
        # Every epoch's loss and validation scores, not just the final ones.
        assert (csv_without_timing(other / "models" / name / "history.csv")
                == csv_without_timing(repo / "models" / name / "history.csv")), name
        assert (other / "models" / name / "codec.json").read_bytes() == (repo / "models" / name / "codec.json").read_bytes()


# --------------------------------------------------------------------------------------------------
# 4. a real MLflow tracking server


@pytest.mark.e2e
def test_tracking_server_records_the_runs(pipelines, tracking_server):
    import mlflow

    for step in pipelines.server_steps:
        assert step.returncode == 0, f"{shown(step)}\n--- server log\n{tracking_server.log()}"
    other = pipelines.server_repo
    client = mlflow.MlflowClient(tracking_uri=tracking_server.uri)
    runs = runs_by_name(client, "adder")
    assert Counter({name: len(found) for name, found in runs.items()}) == Counter(dict.fromkeys(EXPERIMENTS, 1))
    for name in EXPERIMENTS:
        check_training_run(client, runs[name][0], name, other)
        assert runs[name][0].data.tags["dvc_stage"] == "(outside dvc)"
    assert sorted(runs_by_name(client, "adder-datasets")) == sorted(f"generate-{t}" for t in TASKS)
    # Both experiments open as model training, the one made before the stages ran included.
    for experiment in ("adder", "adder-datasets"):
        found = client.get_experiment_by_name(experiment)
        assert found.tags["mlflow.experimentKind"] == "custom_model_development", found.tags
        assert found.tags["mlflow.note.content"].startswith("One run per "), found.tags
    # The registered version says which experiment it comes from, in tags and a sentence.
    seq2seq = runs[SEQ2SEQ][0]
    version = client.get_model_version(f"adder-{TINY['experiments'][SEQ2SEQ]['task']}", "1")
    assert version.run_id == seq2seq.info.run_id
    assert version.tags == {"experiment": SEQ2SEQ, "model": "seq2seq", "framing": "onehot",
                            "test_exact_match": f"{seq2seq.data.metrics['test_exact_match']:.6g}"}, version.tags
    assert version.description.startswith(f"{SEQ2SEQ}: seq2seq (onehot); test exact match "), version.description
    serving = client.get_logged_model(version.source.removeprefix("models:/"))
    listed = json.loads(serving.tags["mlflow.modelVersions"])
    assert [(v["name"], str(v["version"])) for v in listed] == [(version.name, "1")], listed
    # Artifacts went through the server to its destination, and nothing to a local store.
    assert any((tracking_server.folder / "art").rglob("model.keras"))
    assert any((tracking_server.folder / "art").rglob("samples.json"))
    assert not (other / "mlflow.db").exists() and not (other / "mlartifacts").exists()
    assert not (other / "mlruns").exists()


# --------------------------------------------------------------------------------------------------
# 5. and 6. failures: clear one-line errors before any work


def small_project(folder: Path, params: dict, with_data_for: tuple[str, ...] = ()) -> Path:
    """A project folder: params.yaml, and data/<task>/ of the TINY tasks written by the pipeline's own
    generator (in this process: no TensorFlow needed)."""
    from pipeline import problems
    from pipeline.config import parse_params

    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder, params)
    parsed = parse_params(TINY)
    for task in with_data_for:
        for split, rows in problems.split_problems(parsed.tasks[task], parsed.seed).items():
            problems.write_csv(rows, folder / "data" / task / f"{split}.csv")
    return folder


@pytest.mark.e2e
def test_dead_tracking_server_fails_fast_without_training(tmp_path):
    project = small_project(tmp_path / "adder", TINY, with_data_for=("seed",))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = cli_env(uri)
    started = time.monotonic()
    train, generate = run_concurrently((["adder", "train", SEQ2SEQ], project, env, 120),
                                       (["adder", "generate", "mapping"], project, env, 120))
    elapsed = time.monotonic() - started
    for result in (train, generate):
        error = one_error_line(result)
        assert uri in error and "unreachable" in error, error
    # Both processes together take ~10 s on an idle 2-core machine, nearly all of it importing
    # TensorFlow and MLflow; MLflow's default retries against a dead server would take minutes.
    assert elapsed < 30, f"took {elapsed:.0f}s to fail"
    assert not (project / "models" / SEQ2SEQ / "model.keras").exists()
    assert "trained" not in train.stdout
    assert not (project / "data" / "mapping").exists()
    assert not (project / "mlflow.db").exists()


@pytest.mark.e2e
def test_dead_tracking_server_fails_evaluate_compare_and_predict_in_one_line_writing_nothing(repo):
    """Against repo A's trained models: each command that reads or writes the tracking server stops before
    it writes anything of its own (metrics, evaluation, report) when the server is down."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = cli_env(uri)
    written = ("metrics", "evaluation", "reports", "plots")

    def contents() -> dict[str, bytes]:
        return {str(path): path.read_bytes() for folder in written for path in sorted((repo / folder).rglob("*"))
                if path.is_file()}

    before = contents()
    started = time.monotonic()
    results = run_concurrently((["adder", "evaluate", SEQ2SEQ], repo, env, 120), (["adder", "compare"], repo, env, 120),
                               (["adder", "predict", "3+4", "--model", "models:/adder-seed@champion"], repo, env, 120))
    elapsed = time.monotonic() - started
    for result in results:
        error = one_error_line(result)
        assert uri in error and "unreachable" in error, error
        assert result.stdout == "", shown(result)
    assert elapsed < 30, f"took {elapsed:.0f}s to fail"
    assert contents() == before


@pytest.mark.e2e
def test_invalid_params_value_is_named(tmp_path):
    params = json.loads(json.dumps(TINY))
    params["experiments"][SEQ2SEQ]["batch_size"] = 0
    project = small_project(tmp_path / "adder", params, with_data_for=("seed",))
    generate, train = run_concurrently((["adder", "generate", "mapping"], project, cli_env(), 120),
                                       (["adder", "train", SEQ2SEQ], project, cli_env(), 120))
    for result in (generate, train):
        error = one_error_line(result)
        assert f"experiments.{SEQ2SEQ}.batch_size" in error and "(got 0)" in error, error
    assert not (project / "data" / "mapping").exists()
    assert not (project / "models").exists()
    assert not (project / "mlflow.db").exists()


@pytest.mark.e2e
def test_temporary_copy_experiment_needs_a_tracking_server(tmp_path):
    """`dvc exp run --temp` runs where `--queue` does, in a copy under .dvc/tmp/exps/ that is thrown away:
    with the default sqlite store there, its runs would vanish and run.json name runs that do not exist."""
    repo = make_repo(tmp_path / "adder", TINY)
    result = run(["dvc", "exp", "run", "--temp"], repo, cli_env(), 300)
    assert result.returncode != 0, shown(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "start a tracking server and set MLFLOW_TRACKING_URI" in errors[0], shown(result)
    assert "Running stage 'train@" not in result.stdout, shown(result)  # the first stage stopped it
