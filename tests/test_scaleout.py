"""Scale-out on real engines, as docs/scale-out.md runs them: a PostgreSQL-backed `mlflow server`, and a
parallel sweep of `dvc exp run --queue` + `dvc queue start -j 2` against a tracking server.

Nothing is mocked: PostgreSQL is Debian's (`.ci/run` installs it), in a throwaway cluster on a free port;
the servers and DVC's queue workers are real processes. Experiments are tiny: each `adder` process spends
most of its time importing TensorFlow and MLflow.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import unavailable
from helpers import (
    BIN,
    GIT,
    PROJECT,
    TINY,
    adder,
    check_training_run,
    cli_env,
    free_port,
    make_repo,
    mlflow_server,
    read_json,
    run,
    runs_by_name,
    shown,
    tracking_uri,
)

# One task and one sequence experiment of helpers.TINY: a run, a logged model, a registered version.
TASK, EXPERIMENT = "seed", "seed-seq2seq"
PARAMS = {"seed": TINY["seed"], "backend": TINY["backend"], "tasks": {TASK: TINY["tasks"][TASK]},
          "experiments": {EXPERIMENT: TINY["experiments"][EXPERIMENT]}}
# The sweep: one queued experiment per value, run two at a time.
BATCH_SIZES = (5, 20)  # each experiment costs ~40 s of CPU, mostly importing TensorFlow and MLflow
SWEEP = f"experiments.{EXPERIMENT}.batch_size={','.join(map(str, BATCH_SIZES))}"


# --------------------------------------------------------------------------------------------------
# services


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (not on PATH), else initdb's on PATH, else None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parents[1].name))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def as_postgres_user() -> list[str]:
    """postgres refuses to run as root: as root, run its programs as the `postgres` user Debian creates."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        runuser = None
    if runuser is None:
        unavailable("running as root without a `postgres` user and runuser: PostgreSQL cannot start here")
    return [runuser, "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_database():
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port holding an empty database `mlflow`;
    yields its SQLAlchemy URI. Skips only where PostgreSQL is not installed."""
    bindir = postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL is not installed (`apt-get install postgresql`, as .ci/run does)")
    user = as_postgres_user()
    folder = Path(tempfile.mkdtemp(prefix="adder-pg-"))  # not under pytest's root-only tmp: postgres owns it
    if user:
        shutil.chown(folder, "postgres")
    port = free_port()

    def pg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run([*user, str(bindir / args[0]), *args[1:]], capture_output=True, text=True,
                                timeout=timeout, cwd=folder)
        assert result.returncode == 0, f"{shown(result)}\n--- server log\n{log_of(folder)}"
        return result

    try:
        pg("initdb", "-D", str(folder / "data"), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
        # Only TCP on loopback, its socket in the cluster's folder; durability is not needed here.
        pg("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "start",
           "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed is psycopg2.
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def log_of(folder: Path) -> str:
    log = folder / "server.log"
    return log.read_text()[-3000:] if log.is_file() else "(none)"


# --------------------------------------------------------------------------------------------------
# 0. the guide shows the commands these tests run


def test_guide_and_compose_use_the_tested_commands():
    import yaml

    guide = (PROJECT / "docs" / "scale-out.md").read_text()
    readme = (PROJECT / "README.md").read_text()
    compose = yaml.safe_load((PROJECT / "deploy" / "compose.yaml").read_text())
    server = " ".join(compose["services"]["mlflow"]["command"].split())
    for flag in ("mlflow server --app-name basic-auth", "--backend-store-uri postgresql+psycopg2://",
                 "--serve-artifacts", "--artifacts-destination s3://mlflow"):
        assert flag in server, flag
        assert flag in guide, flag
    for command in ("dvc exp run --queue -S 'experiments.", "dvc queue start -j 2", "dvc remote add -d storage",
                    "dvc push", "dvc pull", "export MLFLOW_TRACKING_URI="):
        assert command in guide, command
    assert "dvc queue start -j 2" in readme and "docs/scale-out.md" in readme
    # The server image runs the MLflow and driver versions the project pins.
    pins = dict(line.split("==") for line in (PROJECT / "constraints.txt").read_text().split())
    image = (PROJECT / "deploy" / "mlflow.Dockerfile").read_text()
    assert f"mlflow:v{pins['mlflow']}" in image and f"psycopg2-binary=={pins['psycopg2-binary']}" in image
    assert f"flask-wtf=={pins['Flask-WTF']}" in image
    assert "./basic_auth.ini:/auth-config/basic_auth.ini:ro" in compose["services"]["mlflow"]["volumes"]


# --------------------------------------------------------------------------------------------------
# 1. a PostgreSQL-backed tracking server


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    with postgres_database() as uri, mlflow_server(tmp_path_factory.mktemp("pg-mlflow"), uri) as server:
        yield server, uri


@pytest.mark.e2e
def test_postgres_backed_server_records_the_pipeline(postgres_server, tmp_path):
    import mlflow
    import psycopg2

    server, database = postgres_server
    repo = make_repo(tmp_path / "adder", PARAMS)
    server.wait_ready()
    env = cli_env(server.uri)
    for args in (["adder", "generate", TASK], ["adder", "train", EXPERIMENT], ["adder", "evaluate", EXPERIMENT]):
        result = run(args, repo, env)
        assert result.returncode == 0, f"{shown(result)}\n--- server log\n{server.log()}"

    client = mlflow.MlflowClient(tracking_uri=server.uri)
    runs = runs_by_name(client, "adder")
    assert list(runs) == [EXPERIMENT] and len(runs[EXPERIMENT]) == 1
    run_ = runs[EXPERIMENT][0]
    check_training_run(client, run_, EXPERIMENT, repo)  # params, per-epoch metrics, test metrics, logged model
    assert list(runs_by_name(client, "adder-datasets")) == [f"generate-{TASK}"]
    # The model's files went through the server to its artifacts destination, none to a local store.
    assert any((server.folder / "art").rglob("model.keras"))
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()

    # The registry lives in PostgreSQL too: the champion loads back through the server and answers.
    with_uri = mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    champion = with_uri.get_model_version_by_alias(f"adder-{TASK}", "champion")
    assert champion.run_id == run_.info.run_id
    mlflow.set_tracking_uri(server.uri)
    try:
        rows = mlflow.pyfunc.load_model(f"models:/adder-{TASK}@champion").predict(["3+4", "10+10"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(rows) == 2 and rows["error"].isna().all(), rows  # a tiny model: any digits, but answered
    assert all(answer.isdigit() for answer in rows["answer"]), rows

    # And the rows are in PostgreSQL, not in some other store.
    with psycopg2.connect(database.replace("postgresql+psycopg2", "postgresql")) as db, db.cursor() as cursor:
        cursor.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run_.info.run_id,))
        params = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss'", (run_.info.run_id,))
        (losses,) = cursor.fetchone()
    exp = PARAMS["experiments"][EXPERIMENT]
    assert params["experiment"] == EXPERIMENT and params["batch_size"] == str(exp["batch_size"])
    assert losses == exp["epochs"]


# --------------------------------------------------------------------------------------------------
# 2. a parallel sweep through DVC's experiment queue


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("queue-mlflow")
    with mlflow_server(folder, f"sqlite:///{folder / 'mlflow.db'}") as server:
        yield server


def queue_status(repo: Path) -> str:
    result = run(["dvc", "queue", "status"], repo, cli_env(), 120)
    assert result.returncode == 0, shown(result)
    return result.stdout


def wait_for_sweep(repo: Path, client, timeout: float = 480) -> str:
    """Waits until every queued experiment has succeeded or one failed; returns `dvc queue status`.
    Polls the tracking server (cheap) until every experiment's last stage has logged its run, then DVC
    (a second of CPU a call) until it has committed them all."""
    deadline = time.monotonic() + timeout
    last_dvc_check = time.monotonic()
    while time.monotonic() < deadline:
        reports = client.get_experiment_by_name("adder-reports")
        finished = reports and client.search_runs([reports.experiment_id], "attributes.status = 'FINISHED'")
        if (finished and len(finished) >= len(BATCH_SIZES)) or time.monotonic() - last_dvc_check > 30:
            status, last_dvc_check = queue_status(repo), time.monotonic()
            if "Failed" in status or status.count("Success") == len(BATCH_SIZES):
                return status
        time.sleep(2)
    raise AssertionError(f"the sweep did not finish in {timeout:.0f}s:\n{queue_status(repo)}")


@pytest.fixture(scope="module")
def sweep(local_server, tmp_path_factory):
    """A git + DVC repo whose data is generated and committed, then the sweep queued and run by 2 workers
    that inherit MLFLOW_TRACKING_URI from `dvc queue start`."""
    import mlflow

    repo = make_repo(tmp_path_factory.mktemp("queue") / "adder", PARAMS)
    remote = repo.parent / "dvc-remote"  # a local folder in place of the guide's s3:// remote
    for key, value in (("user.name", "adder e2e"), ("user.email", "e2e@example.invalid")):
        assert run(GIT + ["config", key, value], repo).returncode == 0  # DVC commits every experiment
    local_server.wait_ready()
    env = cli_env(local_server.uri)
    # Queued experiments start from the last commit: with the data in its dvc.lock and the cache, none
    # generates it again.
    for args in (["dvc", "remote", "add", "-d", "storage", str(remote)], ["dvc", "repro", "generate"],
                 GIT + ["add", "dvc.lock", ".dvc/config"], GIT + ["commit", "-q", "-m", "data and remote"],
                 ["dvc", "exp", "run", "--queue", "-S", SWEEP]):
        result = run(args, repo, env, 300)
        assert result.returncode == 0, shown(result)
    queued = queue_status(repo)
    assert queued.count("Queued") == len(BATCH_SIZES), queued
    # The workers it starts keep its stdout and stderr: a pipe would block until they exit.
    with (repo.parent / "queue-start.log").open("w") as log:
        started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, timeout=120)
    try:
        assert started.returncode == 0, (repo.parent / "queue-start.log").read_text()
        status = wait_for_sweep(repo, mlflow.MlflowClient(tracking_uri=local_server.uri))
        shown_exps = run(["dvc", "exp", "show", "--json"], repo, cli_env())
        assert shown_exps.returncode == 0, shown(shown_exps)
        yield repo, status, json.loads(shown_exps.stdout)
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, cli_env())  # workers left behind would outlive the tests


def failed_logs(repo: Path, status: str) -> str:
    """The tail of `dvc queue logs` of every failed experiment in a `dvc queue status` output."""
    names = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    return "\n".join(f"--- {name}\n{run(['dvc', 'queue', 'logs', name], repo, cli_env()).stdout[-3000:]}"
                     for name in names)


def experiments_of(shown_exps: list[dict]) -> dict[int, dict]:
    """`dvc exp show --json`'s experiments by their swept batch_size: name, params and metrics."""
    found = {}
    for branch in shown_exps:
        for experiment in branch.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            batch_size = data["params"]["params.yaml"]["data"]["experiments"][EXPERIMENT]["batch_size"]
            found[batch_size] = {"name": experiment["name"], "metrics": data["metrics"]}
    return found


@pytest.mark.e2e
def test_queued_sweep_runs_every_experiment(sweep):
    repo, status, shown_exps = sweep
    assert status.count("Success") == len(BATCH_SIZES), f"{status}\n{failed_logs(repo, status)}"
    experiments = experiments_of(shown_exps)
    assert sorted(experiments) == sorted(BATCH_SIZES), experiments
    for experiment in experiments.values():
        metrics = experiment["metrics"][f"metrics/{EXPERIMENT}.json"]["data"]
        assert 0 <= metrics["exact_match"] <= 1, experiment


@pytest.mark.e2e
def test_exp_show_is_readable_at_120_columns(sweep):
    """Headline figures only (not every breakdown group), and `make exps` fits a 120-column terminal with the
    swept param beside the experiment's exact match."""
    repo, _, shown_exps = sweep
    for experiment in experiments_of(shown_exps).values():
        assert set(experiment["metrics"][f"metrics/{EXPERIMENT}.json"]["data"]) == {
            "exact_match", "char_accuracy", "train_seconds"}
    table = adder("exps", cwd=repo, env={**cli_env(), "COLUMNS": "120"})
    assert table.returncode == 0, shown(table)
    lines = table.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines) and "…" not in table.stdout, table.stdout
    assert lines[0].split() == ["Experiment", f"{EXPERIMENT}.batch_size", EXPERIMENT, "exact", "match"], table.stdout
    assert len(lines) == 3 + len(BATCH_SIZES), table.stdout  # a header, the workspace, its commit, each experiment


@pytest.mark.e2e
def test_queued_sweep_logs_one_run_per_experiment_none_clobbered(sweep, local_server):
    import mlflow

    repo, _, shown_exps = sweep
    experiments = experiments_of(shown_exps)
    client = mlflow.MlflowClient(tracking_uri=local_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("adder").experiment_id])
    by_batch = {int(r.data.params["batch_size"]): r for r in runs}
    # One run per queued value, each with its own id and the params it was queued with.
    assert len(runs) == len(BATCH_SIZES) and sorted(by_batch) == sorted(BATCH_SIZES)
    assert len({r.info.run_id for r in runs}) == len(BATCH_SIZES)
    exp = PARAMS["experiments"][EXPERIMENT]
    for batch_size, run_ in by_batch.items():
        assert run_.info.status == "FINISHED"
        # Named after its DVC experiment and the value it was queued with, which its tags hold too.
        name = experiments[batch_size]["name"]
        assert run_.info.run_name == f"{EXPERIMENT} batch_size={batch_size} ({name})"
        assert run_.data.tags["dvc_experiment"] == name and run_.data.tags["dvc_changes"] == f"batch_size={batch_size}"
        assert run_.data.tags["mlflow.note.content"].endswith(
            f"DVC experiment `{name}`, run with batch_size={batch_size}.")
        assert (run_.data.params["epochs"] == str(exp["epochs"])
                and run_.data.params["units"] == str(tuple(exp["units"])))
        assert run_.data.tags["dvc_stage"] == f"train@{EXPERIMENT}"
        history = client.get_metric_history(run_.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, exp["epochs"] + 1)), history
        # The test score the experiment's own evaluate wrote is the one its run holds.
        metrics = experiments[batch_size]["metrics"][f"metrics/{EXPERIMENT}.json"]["data"]
        assert run_.data.metrics["test_exact_match"] == pytest.approx(metrics["exact_match"])
        assert run_.data.metrics["test_char_accuracy"] == pytest.approx(metrics["char_accuracy"])
        models = client.search_logged_models(experiment_ids=[run_.info.experiment_id],
                                             filter_string=f"source_run_id = '{run_.info.run_id}'")
        assert sorted(m.name for m in models) == [EXPERIMENT, f"{EXPERIMENT}-serving"], models
    # Every experiment registered its own version of the task's model.
    versions = client.search_model_versions(f"name = 'adder-{TASK}'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    # and says which DVC experiment trained it, so the registered model's page tells them apart.
    assert sorted(v.tags["dvc_experiment"] for v in versions) == sorted(e["name"] for e in experiments.values())
    assert (sorted(runs_by_name(client, "adder-reports"))
            == sorted(f"compare ({e['name']})" for e in experiments.values()))
    # Two workers took the queue. Whether their experiments overlap in time depends on the machine's load: under
    # the test suite's other workers the second has started its experiment after the first had finished.
    assert "Started '2' new experiments task queue workers." in (repo.parent / "queue-start.log").read_text()
    # The workspace itself ran nothing: the queue did.
    assert not (repo / "models").exists()


@pytest.mark.e2e
def test_dvc_remote_shares_a_swept_model_with_a_fresh_clone(sweep, local_server, tmp_path):
    """The guide's hand-over: apply the chosen experiment, commit, `dvc push` to the project's remote; a
    teammate clones and `dvc pull`s the data and the model."""
    import mlflow

    repo, _, shown_exps = sweep
    chosen = experiments_of(shown_exps)[BATCH_SIZES[1]]["name"]
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    env = cli_env()
    for args in (GIT + ["init", "-q", "--bare", str(origin)], GIT + ["remote", "add", "origin", str(origin)],
                 ["dvc", "exp", "apply", chosen],
                 GIT + ["add", "-A"], GIT + ["commit", "-q", "-m", f"batch_size {BATCH_SIZES[1]}"],
                 ["dvc", "push"], GIT + ["push", "-q", "origin", "HEAD"]):
        result = run(args, repo, env)
        assert result.returncode == 0, shown(result)
    result = run(GIT + ["clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert result.returncode == 0, shown(result)
    result = run(["dvc", "pull"], clone, env)
    assert result.returncode == 0, shown(result)
    for folder in (Path("data", TASK), Path("models", EXPERIMENT)):
        files = sorted(p.relative_to(repo) for p in (repo / folder).rglob("*") if p.is_file())
        assert files, folder
        for path in files:
            assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    # The pulled model is the one the tracking server recorded for that experiment.
    run_id = read_json(clone / "models" / EXPERIMENT / "run.json")["run_id"]
    run_ = mlflow.MlflowClient(tracking_uri=local_server.uri).get_run(run_id)
    assert run_.data.params["batch_size"] == str(BATCH_SIZES[1])
    # `make setup` installs DVC's S3 support, which the guide's remote needs.
    doctor = run(["dvc", "doctor"], repo, env)
    assert re.search(r"^\s+s3 \(", doctor.stdout, re.MULTILINE), shown(doctor)


# --------------------------------------------------------------------------------------------------
# 5. concurrent evaluates of one task race for the champion alias

# One evaluate's registration per round, as `adder evaluate` makes it: a scored run, its logged model, then
# register_and_crown. The contenders wait for each other before deciding (a barrier of files), and random
# pauses around every alias read and write (the only thing faked here: the timing) shake the interleaving;
# the processes, the server and the registry are real.
CONTENDER = """
import json, random, sys, time
from pathlib import Path
import mlflow
from pipeline.registry import register_and_crown
from pipeline import tracking

uri, barrier, me, contenders = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(me)
for method in ("get_model_version_by_alias", "set_registered_model_alias", "search_model_versions"):
    original = getattr(mlflow.MlflowClient, method)
    def paused(self, *args, _original=original, **kwargs):
        time.sleep(random.uniform(0, 0.4))
        return _original(self, *args, **kwargs)
    setattr(mlflow.MlflowClient, method, paused)
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("race")
decisions = []
for round_, score in enumerate(json.loads(sys.argv[5])):
    with mlflow.start_run() as run:
        mlflow.log_metric("test_exact_match", score)
        mlflow.set_tag("test_sha256", "the test set")
        model = mlflow.initialize_logged_model(name="serving", source_run_id=run.info.run_id)
        (barrier / f"{round_}-{me}").touch()
        while len(list(barrier.glob(f"{round_}-*"))) < contenders:  # all of them decide at once
            time.sleep(0.01)
        decisions.append(register_and_crown(f"race{round_}", f"models:/{model.model_id}", run.info.run_id,
                                                     score, "the test set"))
print(json.dumps(decisions))
"""
CONTENDERS, ROUNDS = 4, 3


@pytest.mark.e2e
def test_concurrent_evaluates_leave_the_champion_on_the_best_version(local_server, tmp_path):
    import random

    import mlflow

    local_server.wait_ready()
    client = mlflow.MlflowClient(local_server.uri)
    env = {**cli_env(), "PYTHONPATH": str(PROJECT)}
    scores = [random.Random(round_).sample([0.2, 0.5, 0.7, 0.9, 0.95], CONTENDERS) for round_ in range(ROUNDS)]
    processes = [subprocess.Popen([str(BIN / "python"), "-c", CONTENDER, local_server.uri, str(tmp_path), str(i),
                                   str(CONTENDERS), json.dumps([round_scores[i] for round_scores in scores])],
                                  env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(CONTENDERS)]
    by_contender = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
        by_contender.append(json.loads(out.strip().splitlines()[-1]))
    outcomes = []
    for round_ in range(ROUNDS):
        decisions = [contender[round_] for contender in by_contender]
        name = f"adder-race{round_}"
        champion = client.get_model_version_by_alias(name, "champion")
        by_version = {d["version"]: d for d in decisions}
        score_of = {version: d["candidate_exact_match"] for version, d in by_version.items()}
        # The alias ends on the best version, whose run says it was promoted.
        assert score_of[str(champion.version)] == max(scores[round_]), decisions
        assert by_version[str(champion.version)]["decision"] == "promoted", decisions
        # Every promotion recorded took effect over a lower version (or none): following what each replaced
        # from the champion back is a chain of strictly rising scores through promoted runs only.
        for d in decisions:
            if d["decision"] == "promoted":
                replaced = d["champion_version"]
                assert replaced is None or score_of[replaced] < d["candidate_exact_match"], decisions
            else:
                assert d["decision"] == "kept" and d["candidate_exact_match"] < max(scores[round_]), decisions
        # What each run records is what it returned.
        for d in decisions:
            run = client.get_run(client.get_model_version(name, d["version"]).run_id)
            assert run.data.tags["registry.decision"] == d["decision"], (d, run.data.tags)
        outcomes.append(" ".join(f"{d['candidate_exact_match']}:{d['decision']}" for d in decisions))
    print("\nrace: " + "; ".join(outcomes), end="")


# --------------------------------------------------------------------------------------------------
# 6. a sweep's workers log the same dataset at once


@pytest.mark.e2e
def test_runs_logging_the_same_dataset_at_once_all_log_it(local_server, tmp_path):
    """MLflow's store looks a dataset up, then inserts it, so of two concurrent first logs of one dataset one
    breaks the unique key (as a queued sweep's two workers once did); every run must still log it."""
    import threading

    import mlflow
    import pandas as pd

    from pipeline import tracking

    csv = tmp_path / "data" / "add3" / "train.csv"
    csv.parent.mkdir(parents=True)
    frame = pd.DataFrame({"problem": ["1+2"], "answer": [3]})
    workers, rounds = 8, 3
    local_server.wait_ready()
    with tracking_uri(local_server.uri):
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("dataset-race")
        mlflow.set_experiment(experiment_id=experiment_id)  # runs resume only in the active experiment
        for round_ in range(rounds):
            csv.write_text(f"problem,answer\n1+2,3\n# round {round_}\n")  # a new digest: a first log again
            barrier, errors = threading.Barrier(workers), []

            def log(run_id: str, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
                try:
                    with mlflow.start_run(run_id=run_id):
                        barrier.wait()
                        tracking.log_dataset(frame, tmp_path, csv, "training")
                except Exception as e:  # noqa: BLE001 - reported below with the others
                    errors.append(e)

            runs = [client.create_run(experiment_id).info.run_id for _ in range(workers)]
            threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors[0]
            for run_id in runs:
                (logged,) = client.get_run(run_id).inputs.dataset_inputs
                assert logged.dataset.name == "add3-train"
