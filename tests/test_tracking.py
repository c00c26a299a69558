"""What the MLflow UI shows of a run, an experiment and a registered version, against a real temporary
sqlite store: experiment kinds and descriptions, run names and descriptions, durations, datasets, and
test metrics on the logged models. The end-to-end checks (tests/test_e2e.py) read the same through a
real tracking server after a real pipeline run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import mlflow
import pandas as pd
import pytest
import yaml
from helpers import BIN, GIT, PROJECT, Server, cli_env, free_port

from pipeline import tracking
from pipeline.config import parse_params
from pipeline.errors import AdderError
from pipeline.kinds import kind
from pipeline.registry import register_and_crown

PARAMS = {
    "seed": 1,
    "tasks": {"add3": {"terms": 2, "digits": 3, "train_size": 100, "val_size": 10, "test_size": 10},
              "ops": {"terms": 2, "digits": 2, "ops": "+-*", "train_size": 100, "val_size": 10, "test_size": 10}},
    "experiments": {
        "add3-seq2seq-onehot": {"task": "add3", "model": "seq2seq", "epochs": 8, "batch_size": 64,
                                "description": "The tutorial's model on 3-digit sums."},
        "add3-seq2seq-integer_reversed": {"task": "add3", "model": "seq2seq", "epochs": 8, "batch_size": 64,
                                          "encoding": "integer", "reverse": True},
        "add3-digitwise": {"task": "add3", "model": "digitwise", "units": [32], "epochs": 20, "batch_size": 128},
        "ops-transformer": {"task": "ops", "model": "transformer", "units": [64], "epochs": 20, "batch_size": 128},
    },
}


@pytest.fixture
def outside_dvc(monkeypatch):
    for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------------------
# experiments


def test_experiments_open_as_model_training_also_ones_made_before(registry, tmp_path):
    adder = registry.get_experiment_by_name(tracking.RUNS)  # made by the fixture, without tags
    registry.set_experiment_tag(adder.experiment_id, tracking.KIND, "genai_development")
    registry.set_experiment_tag(adder.experiment_id, tracking.NOTE, "Our own words.")
    tracking.connect(tmp_path)
    tracking.connect(tmp_path, tracking.DATASETS)  # made now
    adder = registry.get_experiment_by_name(tracking.RUNS)
    assert adder.tags[tracking.KIND] == "custom_model_development"
    assert adder.tags[tracking.NOTE] == "Our own words."  # a description someone wrote stays
    datasets = registry.get_experiment_by_name(tracking.DATASETS)
    assert datasets.tags[tracking.KIND] == "custom_model_development"
    assert datasets.tags[tracking.NOTE] == tracking.EXPERIMENT_NOTES[tracking.DATASETS]


# --------------------------------------------------------------------------------------------------
# run names and descriptions


def words(exp_name: str, params) -> str:
    return kind(params.experiment(exp_name).model).WORDS


def test_description_says_what_the_run_is_compared_with(outside_dvc):
    params = parse_params(PARAMS)
    onehot = tracking.run_description("add3-seq2seq-onehot", params, words("add3-seq2seq-onehot", params))
    assert onehot.startswith("The tutorial's model on 3-digit sums.\n\n**add3-seq2seq-onehot** learns `add3` "
                             "(2 operands of 1 to 3 digits joined by +; 100 training problems) with `seq2seq`")
    # The same task and model: the settings where they differ, with this run's values.
    reversed_ = tracking.run_description("add3-seq2seq-integer_reversed", params,
                                         words("add3-seq2seq-integer_reversed", params))
    assert "Compared with add3-seq2seq-onehot (same task and model): here encoding=integer, reverse=true." in reversed_
    assert "(units 100, 50; integer, reversed)" in reversed_
    # Another model on the same task; the only experiment of a task.
    digitwise = tracking.run_description("add3-digitwise", params, words("add3-digitwise", params))
    assert "Compares `digitwise` with `seq2seq` on the same problems" in digitwise
    ops = tracking.run_description("ops-transformer", params, words("ops-transformer", params))
    assert "The only experiment on `ops`." in ops
    assert "joined by +, - or *" in ops


def test_runs_outside_a_dvc_experiment_keep_the_experiment_name(outside_dvc, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    name, tags = tracking.training_run(tmp_path, "add3-digitwise", parse_params(PARAMS), kind("digitwise").WORDS)
    assert name == "add3-digitwise"
    assert (tags["task"], tags["model"], tags["framing"]) == ("add3", "digitwise", "digit columns")
    assert not {"dvc_experiment", "dvc_changes"} & set(tags)


def test_runs_in_a_dvc_experiment_are_named_after_it_and_what_it_changed(outside_dvc, tmp_path, monkeypatch):
    """`dvc exp run` sets DVC_EXP_NAME and DVC_EXP_BASELINE_REV (tests/test_scaleout.py runs a real queue)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    for args in (["init", "-q"], ["add", "params.yaml"], ["commit", "-q", "-m", "params"]):
        subprocess.run(GIT + args, cwd=tmp_path, check=True, capture_output=True)
    baseline = subprocess.run(GIT + ["rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    swept = yaml.safe_load(yaml.safe_dump(PARAMS, sort_keys=False))
    swept["experiments"]["add3-digitwise"] |= {"units": [64], "batch_size": 256}
    swept["experiments"]["ops-transformer"]["epochs"] = 3  # another experiment's change is not this run's
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(swept, sort_keys=False))
    monkeypatch.setenv("DVC_EXP_NAME", "regal-aune")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", baseline)

    name, tags = tracking.training_run(tmp_path, "add3-digitwise", parse_params(swept), kind("digitwise").WORDS)
    assert name == "add3-digitwise units=[64] batch_size=256 (regal-aune)"
    assert tags["dvc_experiment"] == "regal-aune" and tags["dvc_baseline"] == baseline
    assert tags["dvc_changes"] == "units=[64] batch_size=256"
    assert tags[tracking.NOTE].endswith("DVC experiment `regal-aune`, run with units=[64], batch_size=256.")
    # Every stage's run says which DVC experiment it belongs to.
    assert tracking.run_name("compare") == "compare (regal-aune)"
    assert tracking.run_tags(tmp_path)["dvc_experiment"] == "regal-aune"


# --------------------------------------------------------------------------------------------------
# a resumed run, datasets and test metrics


def test_a_resumed_run_keeps_its_training_duration_and_status(registry):
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.0)
    trained = registry.get_run(run.info.run_id).info
    time.sleep(0.05)
    with tracking.resume_run(run.info.run_id):
        mlflow.log_metric("test_exact_match", 0.5)
    with pytest.raises(RuntimeError), tracking.resume_run(run.info.run_id):
        raise RuntimeError("evaluation failed")
    after = registry.get_run(run.info.run_id)
    assert after.data.metrics["test_exact_match"] == 0.5
    assert (after.info.status, after.info.end_time) == ("FINISHED", trained.end_time)


def test_splits_and_test_metrics_are_logged_against_the_models(registry, tmp_path):
    csv = tmp_path / "data" / "add3" / "test.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("problem,answer\n1+2,3\n")
    frame = pd.DataFrame({"problem": ["1+2"], "answer": [3]})
    with mlflow.start_run() as run:
        models = [mlflow.initialize_logged_model(name=name, source_run_id=run.info.run_id)
                  for name in ("model", "serving")]
        tested = tracking.log_dataset(frame, tmp_path, csv, "test")
        tracking.log_test_metrics({"test_exact_match": 0.5}, tested, [f"models:/{m.model_id}" for m in models])
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()[:36]
    (logged,) = registry.get_run(run.info.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("add3-test", digest)
    assert logged.dataset.source == '{"uri": "data/add3/test.csv"}'  # project-relative, not this machine's path
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "test"
    for model in models:
        (metric,) = registry.get_logged_model(model.model_id).metrics
        assert (metric.key, metric.value, metric.dataset_name, metric.dataset_digest) == (
            "test_exact_match", 0.5, "add3-test", digest)
    assert len(registry.get_metric_history(run.info.run_id, "test_exact_match")) == 1


# --------------------------------------------------------------------------------------------------
# registered versions


def test_registered_versions_say_which_experiment_they_come_from(registry):
    labels = {"experiment": "add3-seq2seq-onehot", "model": "seq2seq", "framing": "onehot"}
    with mlflow.start_run(run_name="add3-seq2seq-onehot") as run:
        mlflow.log_metric("test_exact_match", 0.4567)
        model = mlflow.initialize_logged_model(name="serving", source_run_id=run.info.run_id)
        decision = register_and_crown("add3", f"models:/{model.model_id}", run.info.run_id, 0.4567, "tests",
                                               labels)
    version = registry.get_model_version("adder-add3", decision["version"])
    assert version.tags == {**labels, "test_exact_match": "0.4567"}
    assert version.description == "add3-seq2seq-onehot: seq2seq (onehot); test exact match 45.67%."
    assert "`add3` problems" in registry.get_registered_model("adder-add3").description
    # The logged model lists the version, so its page shows it registered.
    listed = json.loads(registry.get_logged_model(model.model_id).tags["mlflow.modelVersions"])
    assert [(v["name"], str(v["version"])) for v in listed] == [("adder-add3", decision["version"])]


def test_registered_versions_of_a_sweep_name_their_dvc_experiment(registry):
    labels = {"experiment": "add3-digitwise", "model": "digitwise", "framing": "digit columns"}
    sweep = {"dvc_experiment": "regal-aune", "dvc_changes": "units=[64]"}
    with mlflow.start_run(run_name="add3-digitwise units=[64] (regal-aune)", tags=sweep) as run:
        model = mlflow.initialize_logged_model(name="serving", source_run_id=run.info.run_id)
        decision = register_and_crown("add3", f"models:/{model.model_id}", run.info.run_id, 0.9, "tests",
                                               labels)
    version = registry.get_model_version("adder-add3", decision["version"])
    assert version.tags == {**labels, **sweep, "test_exact_match": "0.9"}
    assert version.description == ("add3-digitwise units=[64] (regal-aune): digitwise (digit columns); "
                                   "test exact match 90.00%.")


# --------------------------------------------------------------------------------------------------
# a tracking server behind MLflow's basic authentication


@pytest.fixture(scope="module")
def authenticated_server(tmp_path_factory):
    """A real `mlflow server --app-name basic-auth` with deploy/compose.yaml's configuration on a free local
    port, its admin's password set at first start; yields its URI and that password."""
    import contextlib
    import os
    import signal

    folder = tmp_path_factory.mktemp("auth-server")
    config = (PROJECT / "deploy" / "basic_auth.ini").read_text()  # compose's, users kept here
    (folder / "auth.ini").write_text(config.replace("sqlite:////auth/basic_auth.db", f"sqlite:///{folder / 'auth.db'}"))
    port, password = free_port(), "not-the-default"
    env = {**cli_env(), "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (folder / "server.log").open("w") as log:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(folder / "art")],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, folder)
    try:
        server.wait_ready()
        yield server.uri, password
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


@pytest.mark.e2e
def test_health_check_sends_mlflows_credentials(authenticated_server, monkeypatch, tmp_path):
    uri, password = authenticated_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    try:
        # No credentials, or wrong ones: one line naming the server and the settings, not "unreachable".
        with pytest.raises(AdderError, match=r"^MLflow tracking server http://127\.0\.0\.1:\d+ refused this client "
                                             r"\(HTTP 401\); set MLFLOW_TRACKING_USERNAME "
                                             r"and MLFLOW_TRACKING_PASSWORD"):
            tracking.connect(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(AdderError, match="refused this client"):
            tracking.connect(tmp_path)
        # MLflow's own settings: the check passes, and runs are recorded.
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        assert tracking.connect(tmp_path) == uri
        with mlflow.start_run() as run:
            mlflow.log_metric("m", 1.0)
        assert mlflow.MlflowClient().get_run(run.info.run_id).data.metrics == {"m": 1.0}
    finally:
        mlflow.set_tracking_uri(None)


def test_an_unreachable_server_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(AdderError, match=r"^MLflow tracking server http://127\.0\.0\.1:\d+ is unreachable \(\w+\); "):
        tracking.connect(tmp_path)
