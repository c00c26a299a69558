"""Faults that must lose nothing, with real processes: `adder train` killed with SIGKILL while it fits,
saves and logs to MLflow; corrupted model files; a run that is not in the store. Each is followed by the
commands a user runs next, which must answer in one line or work, never print a traceback or register
the wrong model. The project is test_serving's tiny one: seconds of training, most of each process's
time is importing Keras and MLflow."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import BIN, adder, cli_env, mlflow_server, one_error_line, shown
from test_serving import EXPERIMENT, TASK, TINY  # its tiny project; pytest puts tests/ on sys.path

from pipeline.errors import AdderError
from pipeline.model_folder import STAGING, verified

pytestmark = pytest.mark.e2e
SLOW = {**TINY, "experiments": {EXPERIMENT: {**TINY["experiments"][EXPERIMENT], "epochs": 30}}}  # time to kill it


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project trained, evaluated and registered once; its experiment trains for 30 epochs when
    killed, so that each kill lands where it is aimed."""
    folder = tmp_path_factory.mktemp("adder-faults")
    (folder / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    for step in (["generate", TASK], ["train", EXPERIMENT], ["evaluate", EXPERIMENT]):
        result = adder(*step, cwd=folder)
        assert result.returncode == 0, shown(result)
    (folder / "params.yaml").write_text(yaml.safe_dump(SLOW, sort_keys=False))
    return folder


def staging(project: Path) -> list[Path]:
    return sorted((project / "models").glob(f"{STAGING}*"))


def kill_train(project: Path, when, signum: int = signal.SIGKILL) -> tuple[subprocess.Popen, str, list[str]]:
    """Starts `adder train`, sends it signum as soon as when(stdout so far, its staging folders) holds;
    returns the ended process, its output and what its staging folder held at that moment. Staging folders
    that an earlier killed training left behind are not its own."""
    log = project / "train.log"
    left = set(staging(project))
    with log.open("w") as out:
        process = subprocess.Popen([str(BIN / "adder"), "train", EXPERIMENT], cwd=project, env=cli_env(),
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240

    def own() -> list[Path]:
        return [folder for folder in staging(project) if folder not in left]

    while not when(log.read_text(), own()):
        assert process.poll() is None, f"train ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never reached the kill point:\n{log.read_text()[-3000:]}"
        time.sleep(0.005)
    held = sorted(p.name for folder in own() for p in folder.iterdir())
    process.send_signal(signum)
    process.wait(timeout=60)
    return process, log.read_text(), held


def files_appeared(*names: str):
    return lambda _, folders: any(all((folder / name).exists() for name in names) for folder in folders)


def epoch_printed(epoch: int):
    return lambda output, _: f"{EXPERIMENT}: epoch {epoch}/30" in output


def runs(project: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        experiment = mlflow.get_experiment_by_name("adder")
        return mlflow.MlflowClient().search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    finally:
        mlflow.set_tracking_uri(None)


def test_train_killed_at_any_point_leaves_the_published_model_whole(project):
    before = verified(project / "models" / EXPERIMENT)
    metrics_before = (project / "metrics" / f"{EXPERIMENT}.json").read_bytes()
    points = {"fit": epoch_printed(3), "save": files_appeared("model.keras"),
              "logging": files_appeared("model.keras", "codec.json", "history.csv")}
    for number, (point, when) in enumerate(points.items()):
        _, output, held = kill_train(project, when)
        print(f"\nkilled during {point}: staging held {held}", end="")
        # The published folder is the one trained before, whole: the same run, files matching run.json.
        assert verified(project / "models" / EXPERIMENT) == before, (point, output)
        # Each training ends the run that the one before it left RUNNING.
        assert output.count("which died; marked KILLED") == (number > 0), output
    assert [run.info.status for run in runs(project)] == ["FINISHED", "KILLED", "KILLED", "RUNNING"]

    # Next, evaluate ends the dead runs as KILLED and scores the published model as its own run's, again.
    result = adder("evaluate", EXPERIMENT, cwd=project)
    assert result.returncode == 0 and "Traceback" not in result.stderr, shown(result)
    assert result.stdout.count("which died; marked KILLED") == 1, shown(result)
    # No version for a killed run; the published one is still the champion, as decided when it was promoted.
    assert f"adder-{TASK} version 1: promoted (no champion yet)" in result.stdout, shown(result)
    assert [run.info.status for run in runs(project)] == ["FINISHED", "KILLED", "KILLED", "KILLED"]
    assert (project / "metrics" / f"{EXPERIMENT}.json").read_bytes() == metrics_before  # same model, same figures
    result = adder("predict", "12+50", cwd=project)
    assert result.returncode == 0 and result.stdout.strip().lstrip("-").isdigit(), shown(result)

    # The rerun completes, clears what the killed ones left, and publishes a new run's model.
    (project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    result = adder("train", EXPERIMENT, cwd=project)
    assert result.returncode == 0, shown(result)
    assert staging(project) == []
    assert verified(project / "models" / EXPERIMENT)["run_id"] == runs(project)[-1].info.run_id != before["run_id"]


def test_sigterm_ends_training_with_its_run_killed(project):
    (project / "params.yaml").write_text(yaml.safe_dump(SLOW, sort_keys=False))
    try:
        process, output, _ = kill_train(project, epoch_printed(3), signal.SIGTERM)
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    assert process.returncode == 130 and "Traceback" not in output, output  # 130: as Ctrl-C
    assert runs(project)[-1].info.status == "KILLED" and staging(project) == []


def test_corrupt_or_mismatched_model_files_are_one_line_errors(project, tmp_path):
    """predict, serve and evaluate on a model folder whose files do not match run.json, or do not load; and a
    corrupt unrelated folder that must not stop predict from choosing the best model."""
    published = project / "models" / EXPERIMENT
    copies = {}
    for name, damage in (("model.keras", lambda b: b[: len(b) // 2]), ("codec.json", lambda b: b[:20]),
                         ("run.json", lambda b: b[:30])):
        copies[name] = tmp_path / name
        shutil.copytree(published, copies[name])
        (copies[name] / name).write_bytes(damage((copies[name] / name).read_bytes()))
    undigested = tmp_path / "undigested"  # run.json without digests: nothing would check the files
    shutil.copytree(published, undigested)
    info = json.loads((undigested / "run.json").read_text())
    (undigested / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != "sha256"}))
    foreign = tmp_path / "foreign"  # a model file that matches run.json's digest but is not a Keras model
    shutil.copytree(published, foreign)
    (foreign / "model.keras").write_bytes(b"PK\x03\x04 not a zip")
    digest = hashlib.sha256((foreign / "model.keras").read_bytes()).hexdigest()
    (foreign / "run.json").write_text(json.dumps({**info, "sha256": {**info["sha256"], "model.keras": digest}}))
    # A corrupt experiment scored higher than the real one, beside it.
    (project / "models" / "broken").mkdir()
    (project / "models" / "broken" / "codec.json").write_text('{"kind": "chars", "limi')
    (project / "metrics" / "broken.json").write_text('{"exact_match": 1.0}')
    try:
        cases = [(["--model", str(copies[name]), "1+2"], f"{copies[name] / name} {says}")
                 for name, says in (("model.keras", "is not the file MLflow run"),
                                    ("codec.json", "is not the file MLflow run"),
                                    ("run.json", "is corrupt"))]
        cases += [(["--model", str(undigested), "1+2"], f"{undigested / 'run.json'} is not as training writes it"),
                  (["--model", str(foreign), "1+2"], f"{foreign / 'model.keras'} is not a Keras model that loads"),
                  (["12+50"], None)]  # the default model: not the broken folder
        with ThreadPoolExecutor(len(cases)) as pool:  # each spends its time importing Keras: overlap them
            results = list(pool.map(lambda case: adder("predict", *case[0], cwd=project), cases))
        for result, (_, says) in zip(results[:-1], cases):
            one_error_line(result, says)
        assert results[-1].returncode == 0 and results[-1].stdout.strip().lstrip("-").isdigit(), shown(results[-1])

        # evaluate and serve on the published folder, damaged in place; then repaired.
        backup = tmp_path / "backup"
        shutil.copytree(published, backup)
        metrics = {path: path.read_bytes() for path in (project / "metrics" / f"{EXPERIMENT}.json",
                                                        project / "evaluation" / f"{EXPERIMENT}.json")}
        (published / "codec.json").write_text("{")
        with ThreadPoolExecutor(2) as pool:
            for result in pool.map(lambda command: adder(command, EXPERIMENT, cwd=project), ("evaluate", "serve")):
                one_error_line(result, f"{published / 'codec.json'} is not the file")
        shutil.rmtree(published)
        shutil.copytree(backup, published)
        # A run that is not in the store: evaluate fails in one line and writes nothing.
        info = json.loads((published / "run.json").read_text())
        (published / "run.json").write_text(json.dumps({**info, "run_id": "0" * 32}))
        one_error_line(adder("evaluate", EXPERIMENT, cwd=project), f"MLflow run {'0' * 32} is not in the store")
        assert {path: path.read_bytes() for path in metrics} == metrics
    finally:
        shutil.rmtree(project / "models" / "broken")
        (project / "metrics" / "broken.json").unlink()
        if (tmp_path / "backup").is_dir():
            shutil.rmtree(published)
            shutil.copytree(tmp_path / "backup", published)


def registry_client(project: Path) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_adder_all_follows_the_champions_after_an_evaluate_killed_before_rebuilding_it(project):
    """A champion that moved while adder-all was not rebuilt (the evaluate that promoted it killed in
    between): the next evaluate rebuilds adder-all over the champions, and keeps each decision as it was."""
    name = f"adder-{TASK}"
    client = registry_client(project)
    members = lambda: client.get_model_version_by_alias("adder-all", "champion").tags["members"]
    try:
        assert adder("evaluate", EXPERIMENT, cwd=project).returncode == 0
        published = verified(project / "models" / EXPERIMENT)["run_id"]
        (mine,) = client.search_model_versions(f"name = '{name}' and run_id = '{published}'")
        champion = client.get_model_version_by_alias(name, "champion")
        assert members() == f"{name}/{champion.version}"
        # What the killed evaluate left: another run's version crowned, adder-all not rebuilt.
        run = client.get_run(champion.run_id)
        other = client.create_run(run.info.experiment_id, tags={"test_sha256": run.data.tags["test_sha256"]})
        client.log_metric(other.info.run_id, "test_exact_match", 1.0)
        client.set_terminated(other.info.run_id)
        moved = client.create_model_version(name, source=champion.source, run_id=other.info.run_id)
        client.set_registered_model_alias(name, "champion", moved.version)
        result = adder("evaluate", EXPERIMENT, cwd=project)
        assert result.returncode == 0, shown(result)
        assert members() == f"{name}/{moved.version}"
        # The alias on the published run's version: scored again, it is the champion, and adder-all follows.
        client.set_registered_model_alias(name, "champion", mine.version)
        result = adder("evaluate", EXPERIMENT, cwd=project)
        assert result.returncode == 0 and f"{name} version {mine.version}: promoted" in result.stdout, shown(result)
        assert client.get_run(published).data.tags["registry.decision"] == "promoted"
        assert members() == f"{name}/{mine.version}"
    finally:
        mlflow.set_tracking_uri(None)


def test_predict_needs_neither_metrics_nor_every_model_folder(project, tmp_path):
    """While a stage reruns, DVC has deleted its outputs: evaluate's metrics/, or a retrained model's folder.
    The default model comes from the published folders, and a missing folder says how to restore it."""
    metrics, published = project / "metrics", project / "models" / EXPERIMENT
    metrics.rename(tmp_path / "metrics")
    try:
        result = adder("predict", "12+50", cwd=project)
        assert result.returncode == 0 and result.stdout.strip().lstrip("-").isdigit(), shown(result)
        published.rename(tmp_path / EXPERIMENT)
        one_error_line(adder("predict", "--model", EXPERIMENT, "12+50", cwd=project), f"no model {EXPERIMENT!r}")
        # Where dvc.lock records the folder, DVC's cache holds its last version: the error says how to get it.
        (project / "dvc.lock").write_text(f"stages:\n  train@{EXPERIMENT}:\n"
                                          f"    outs:\n    - path: models/{EXPERIMENT}\n")
        one_error_line(adder("predict", "--model", EXPERIMENT, "12+50", cwd=project),
                       f"`dvc checkout models/{EXPERIMENT}` restores the last one")
    finally:
        (project / "dvc.lock").unlink(missing_ok=True)
        (tmp_path / "metrics").rename(metrics)
        if (tmp_path / EXPERIMENT).is_dir():
            (tmp_path / EXPERIMENT).rename(published)


def test_load_failures_name_the_file(tmp_path):
    """Unit check of the loaders on files that exist but do not load (no training needed)."""
    from pipeline.model_folder import load_keras, read_codec

    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "codec.json").write_text('{"kind": "nosuch"}')
    with pytest.raises(AdderError, match=r"model\.keras is not a Keras model that loads"):
        load_keras(tmp_path / "model.keras")
    with pytest.raises(AdderError, match=r"codec\.json is not a codec that loads \(KeyError\)"):
        read_codec(tmp_path / "codec.json")


def test_tracking_server_dying_during_training_fails_in_one_line_and_rerun_completes(project, tmp_path):
    """`adder train` against a real `mlflow server`, killed after a few epochs; with a server on the same
    store again, the rerun completes and ends the run the failed one left RUNNING."""
    (project / "params.yaml").write_text(yaml.safe_dump(SLOW, sort_keys=False))
    store = f"sqlite:///{tmp_path / 'server.db'}"
    try:
        with mlflow_server(tmp_path, store) as server:
            server.wait_ready()
            env = cli_env(server.uri)
            log = project / "train-server.log"
            with log.open("w") as out:
                process = subprocess.Popen([str(BIN / "adder"), "train", EXPERIMENT], cwd=project, env=env,
                                           stdout=out, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 240
            while f"{EXPERIMENT}: epoch 3/30" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            os.killpg(server.process.pid, signal.SIGKILL)
            died = time.monotonic()
            _, stderr = process.communicate(timeout=120)
            seconds = time.monotonic() - died
        print(f"\ntraining failed {seconds:.1f}s after the server died", end="")
        lines = stderr.strip().splitlines()
        assert process.returncode == 2 and len(lines) == 1, stderr[-3000:]
        assert lines[0].startswith(f"error: MLflow tracking server {server.uri} failed during training"), lines[0]
        assert seconds < 30 and staging(project) == []
        # A server back on the same store: the rerun completes.
        (project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
        with mlflow_server(tmp_path, store) as again:
            again.wait_ready()
            result = adder("train", EXPERIMENT, cwd=project, env=cli_env(again.uri))
            assert result.returncode == 0, shown(result)
            assert "which died; marked KILLED" in result.stdout, shown(result)
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))

