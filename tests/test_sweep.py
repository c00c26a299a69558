"""`adder sweep` and `adder study`: settings read as grids and search spaces, studies sized from their seed
spread, bad input refused in one line before any trial, and sweeps run for real on Ray (in-process, and on a
two-node cluster started here, one node killed mid-sweep) against a real `mlflow server`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from helpers import (
    BIN,
    TINY,
    adder,
    cli_env,
    free_port,
    mlflow_server,
    one_error_line,
    shown,
    tracking_uri,
    write_params,
)

from pipeline.config import parse_params
from pipeline.errors import AdderError
from pipeline.powered import PoweredStudy, seeds_needed
from pipeline.space import Axis, dvc_command, grid, parse_axes, parse_axis, split_values, trial_params
from pipeline.sweep import Trial, best_of

EXP = "seed-seq2seq"

# --------------------------------------------------------------------------------------------------
# settings: grids, search spaces and what each trial runs


def test_settings_read_as_lists_ranges_and_search_spaces():
    assert parse_axis("learning_rate=0.01,0.02") == Axis("learning_rate", (0.01, 0.02))
    assert parse_axis("seed=1..4") == Axis("seed", (1, 2, 3, 4))
    assert parse_axis("units=[64,32],[8,8]") == Axis("units", ([64, 32], [8, 8]))
    assert parse_axis("learning_rate=0.001:0.1:log") == Axis("learning_rate", low=0.001, high=0.1, log=True)
    assert parse_axis("epochs=2:9") == Axis("epochs", low=2, high=9)
    assert split_values("1,[2,3],x") == ["1", "[2,3]", "x"]


def test_a_grid_is_every_combination_the_first_axis_slowest():
    axes = parse_axes(["learning_rate=0.01,0.02", "seed=1..3"])
    assert grid(axes) == [{"learning_rate": lr, "seed": s} for lr in (0.01, 0.02) for s in (1, 2, 3)]
    with pytest.raises(AdderError, match="a range .* is a search space"):
        grid(parse_axes(["learning_rate=0.001:0.1"]))


@pytest.mark.parametrize(("setting", "says"), [
    ("nosuch=1", "-S nosuch: unknown key; allowed: seed, task, model"),
    ("learning_rate", "expected key=value"),
    ("seed=5..2", "an empty range"),
    ("learning_rate=0.1:0.01", "low < high"),
    ("learning_rate=0:1:log", "low > 0 with :log"),
    ("learning_rate=a:b", "two numbers"),
    ("epochs=1,1", "a value listed twice"),
    ("model=seq2seq,attention", "sweep another experiment"),
])
def test_a_setting_that_cannot_be_read_is_named(setting, says):
    with pytest.raises(AdderError) as error:
        parse_axis(setting)
    assert says in str(error.value)


def test_a_key_given_twice_is_refused():
    with pytest.raises(AdderError, match="-S seed: given twice"):
        parse_axes(["seed=1", "seed=2"])


def test_each_trial_is_the_experiment_with_its_settings_validated_as_params_yaml():
    params = trial_params(TINY, EXP, {"seed": 7, "epochs": 5})
    assert params.seeds_of(EXP) == (7,) and params.experiment(EXP).epochs == 5
    assert TINY["experiments"][EXP].get("seeds") is None  # the raw params are left as they were
    with pytest.raises(AdderError) as error:
        trial_params(TINY, EXP, {"learning_rate": 2})
    assert str(error.value).startswith("-S learning_rate=2: experiments.seed-seq2seq.learning_rate: ")


def test_each_trial_prints_as_the_dvc_experiment_that_reproduces_it():
    assert dvc_command(EXP, {"seed": 3, "units": [16, 8], "reverse": True}) == (
        "dvc exp run -S 'experiments.seed-seq2seq.seeds=[3]' -S 'experiments.seed-seq2seq.units=[16, 8]' "
        "-S experiments.seed-seq2seq.reverse=true")


def test_the_best_trial_is_chosen_on_validation_never_on_test():
    params = parse_params(TINY)
    trials = [Trial(n, EXP, {}, params, result={"metrics": {"val_exact_match": val, "exact_match": test}})
              for n, val, test in ((1, 0.5, 0.9), (2, 0.8, 0.1), (3, 0.8, 0.2))]
    assert best_of(trials).number == 2  # the earliest of the two best on validation
    assert best_of([Trial(4, EXP, {}, params, error="died")]) is None


# --------------------------------------------------------------------------------------------------
# studies sized from their seed spread (the trials faked: each a fixed score per arm and seed)


def test_seeds_needed_follow_the_seed_spread():
    assert seeds_needed(0.0, 0.0, 0.05) == 2
    # z = 1.96: (1.96 / 0.05)**2 * (0.1**2 + 0.1**2) = 30.7
    assert seeds_needed(0.1, 0.1, 0.05) == 31
    assert seeds_needed(0.2, 0.1, 0.05) > seeds_needed(0.1, 0.1, 0.05) > seeds_needed(0.1, 0.1, 0.1)


def finish(trial: Trial, spread: float, problems: int = 200) -> Trial:
    """A stand-in result: this arm's mean plus seeded noise of the given spread, as 0/1 per test problem."""
    rng = np.random.default_rng(trial.overrides["seed"] * 7 + len(trial.exp_name))
    share = float(np.clip(0.5 + spread * rng.standard_normal(), 0, 1))
    correct = rng.random(problems) < share
    trial.result = {"metrics": {"exact_match": float(correct.mean()), "val_exact_match": share},
                    "correct": "".join("1" if c else "0" for c in correct)}
    return trial


def test_a_powered_study_trains_its_pilot_then_as_many_seeds_as_its_spread_needs():
    raw = {**TINY, "experiments": {**TINY["experiments"], "seed-seq2seq-reversed": {
        **TINY["experiments"][EXP], "reverse": True}}, "studies": {"reversing": [EXP, "seed-seq2seq-reversed"]}}
    plan = PoweredStudy(parse_params(raw), raw, ["reversing"], half_width=0.1, pilot=3, max_seeds=40)
    spread = {EXP: 0.15, "seed-seq2seq-reversed": 0.05}
    asked = []
    while (trial := plan.ask()) is not None:  # one at a time: each told before the next is asked
        asked.append((trial.exp_name, trial.overrides["seed"]))
        plan.tell(finish(trial, spread[trial.exp_name]))
    pilot = [(arm, s) for arm in (EXP, "seed-seq2seq-reversed") for s in (1, 2, 3)]
    assert asked[:6] == pilot and len(asked) > 6  # the pilot could not settle a spread of 15 points
    assert {arm: plan.asked[arm] for arm in plan.arms} == {arm: len(plan.results[arm]) for arm in plan.arms}
    gap = plan.gaps[("reversing", EXP, "seed-seq2seq-reversed")]
    assert (gap["high"] - gap["low"]) / 2 <= 0.1 or max(plan.asked.values()) == 40
    assert "| reversing | reverse: False → True |" in plan.table()


# --------------------------------------------------------------------------------------------------
# real runs: the CLI, Ray and an MLflow server


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project of TINY's seed task with its data generated; the sweeps add their runs to its store."""
    folder = tmp_path_factory.mktemp("sweep") / "adder"
    folder.mkdir()
    write_params(folder, {**TINY, "tasks": {"seed": TINY["tasks"]["seed"]},
                          "experiments": {EXP: TINY["experiments"][EXP]}})
    result = adder("generate", "seed", cwd=folder)
    assert result.returncode == 0, shown(result)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'srv.db'}") as started:
        started.wait_ready()
        yield started


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "says"), [
    (["sweep", EXP, "-S", "nosuch=1"], "-S nosuch: unknown key"),
    (["sweep", EXP, "-S", "learning_rate=0.5,2"], "-S learning_rate=2: experiments.seed-seq2seq.learning_rate"),
    (["sweep", EXP], "nothing to sweep"),
    (["sweep", "nosuch", "-S", "seed=1"], "unknown experiment 'nosuch'"),
    (["sweep", EXP, "-S", "learning_rate=0.001:0.1"], "a range (low:high) is a search space"),
    (["sweep", EXP, "-S", "seed=1,2", "--address", "127.0.0.1:1"], "no Ray cluster at 127.0.0.1:1"),
    (["study", "nosuch"], "unknown study 'nosuch'"),
])
def test_bad_input_is_one_line_before_any_trial(project, args, says):
    one_error_line(adder(*args, cwd=project, env={**cli_env(), "ADDER_WARM": "0"}), says)


@pytest.mark.e2e
def test_an_unreachable_tracking_server_is_one_line_before_any_trial(project):
    result = adder("sweep", EXP, "-S", "seed=1,2", cwd=project, env={**cli_env(f"http://127.0.0.1:{free_port()}"),
                                                                      "ADDER_WARM": "0"})
    one_error_line(result, "is unreachable")
    assert "MLflow run" not in result.stdout  # no sweep started


def child_runs(uri: str) -> tuple[dict, list]:
    """The one sweep run on the server and its child runs."""
    with tracking_uri(uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name("adder-sweeps")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


@pytest.mark.e2e
def test_a_search_runs_in_process_and_logs_each_trial_once(project, tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    with mlflow_server(folder, f"sqlite:///{folder / 'srv.db'}") as server:
        server.wait_ready()
        result = adder("sweep", EXP, "-S", "learning_rate=0.001:0.01:log", "-S", "seed=1,2", "--trials", "3",
                       cwd=project, env={**cli_env(server.uri), "ADDER_WARM": "0"})
        assert result.returncode == 0, shown(result)
        assert "Ray: 1 node" in result.stdout and "3/3 done, 0 running, 0 failed" in result.stdout, shown(result)
        parent, children = child_runs(server.uri)
    assert parent.info.status == "FINISHED" and parent.data.params["mode"] == "search"
    assert parent.data.metrics["trials_done"] == 3 and "best.command" in parent.data.tags
    assert sorted(int(r.data.tags["trial"]) for r in children) == [1, 2, 3]
    for run in children:
        assert run.info.status == "FINISHED"
        assert 0.001 <= float(run.data.params["learning_rate"]) <= 0.01
        lr, seed = run.data.params["learning_rate"], run.data.params["seed"]
        assert run.data.tags["dvc_command"] == (f"dvc exp run -S experiments.seed-seq2seq.learning_rate={lr} "
                                                f"-S 'experiments.seed-seq2seq.seeds=[{seed}]'")


# --------------------------------------------------------------------------------------------------
# a two-node Ray cluster on this machine: `ray start --head` and `ray start --address`


def session_pids(leader: int) -> list[int]:
    """Every process of the session a node was started in (its raylet, store and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == leader:
                    pids.append(int(entry.name))
    return pids


def kill_session(leader: int) -> None:
    for pid in session_pids(leader):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# Ray's token authentication (on by default where ~/.ray/auth_token exists) is for clusters spanning
# machines (docs/scale-out.md); this one is local.
RAY_ENV = {**cli_env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "ADDER_WARM": "0"}


class Cluster:
    """A head and a worker node, each with one CPU and its own session, so that either can be killed alone
    (`ray stop` would stop every Ray on the machine)."""

    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # private; short, as Ray's socket paths must be
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Dead nodes noticed in seconds, not the default half minute.
        self.env = {**RAY_ENV, "RAY_health_check_period_ms": "500",
                    "RAY_health_check_failure_threshold": "4", "RAY_health_check_timeout_ms": "1000"}
        self.head = self.start("--head", f"--port={self.port}", f"--temp-dir={self.temp}", "--include-dashboard=false")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            assert time.monotonic() < deadline and self.head.poll() is None, "the Ray head did not start"
            time.sleep(0.5)
        self.worker = self.start(f"--address={self.address}")

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                                 *args], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def nodes(self) -> int:
        probe = "import ray; ray.init(address='%s', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        result = subprocess.run([str(BIN / "python"), "-c", probe % self.address], env=self.env, capture_output=True,
                                text=True, timeout=60)
        return int(result.stdout.split()[-1]) if result.returncode == 0 else 0

    def close(self) -> None:
        for node in (self.worker, self.head):
            kill_session(node.pid)
            node.wait(10)


@pytest.fixture
def cluster():
    started = Cluster()
    try:
        deadline = time.monotonic() + 90
        while started.nodes() < 2:
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield started
    finally:
        started.close()


@pytest.mark.e2e
def test_a_sweep_on_two_nodes_logs_each_trial_once_with_the_figures_adder_train_gets(project, server, cluster):
    result = adder("sweep", EXP, "-S", "seed=1..4", "--address", cluster.address, cwd=project,
                   env={**RAY_ENV, "MLFLOW_TRACKING_URI": server.uri}, timeout=300)
    assert result.returncode == 0, shown(result)
    assert "Ray: 2 nodes, 2 CPUs" in result.stdout, shown(result)
    parent, children = child_runs(server.uri)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2", "3", "4"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["node"] for r in children}) == 2  # trials ran on both nodes

    # Seed 1 is params.yaml's own: `adder train` and `adder evaluate` get the trial's figures.
    local = {**cli_env(), "ADDER_WARM": "0"}
    for command in (["train", EXP], ["evaluate", EXP]):
        done = adder(*command, cwd=project, env=local)
        assert done.returncode == 0, shown(done)
    metrics = yaml.safe_load((project / "metrics" / f"{EXP}.json").read_text())
    first = next(r for r in children if r.data.params["seed"] == "1")
    assert first.data.metrics["test_exact_match"] == metrics["exact_match"]
    assert first.data.metrics["test_char_accuracy"] == metrics["char_accuracy"]
    history = (project / "models" / EXP / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("val_exact_match")
    assert first.data.metrics["val_exact_match"] == float(history[-1].split(",")[column])


@pytest.mark.e2e
def test_a_node_lost_mid_sweep_has_its_trial_retried_elsewhere_and_nothing_lost(project, tmp_path, cluster):
    folder = tmp_path / "server"
    folder.mkdir()
    with mlflow_server(folder, f"sqlite:///{folder / 'srv.db'}") as server:
        server.wait_ready()
        sweep = subprocess.Popen([str(BIN / "adder"), "sweep", EXP, "-S", "seed=1..4", "-S", "epochs=40",
                                  "--address", cluster.address], cwd=project, text=True,
                                 env={**RAY_ENV, "MLFLOW_TRACKING_URI": server.uri}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not any("remote_trial" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
                      for pid in session_pids(cluster.worker.pid) if Path(f"/proc/{pid}").exists()):
            assert time.monotonic() < deadline and sweep.poll() is None, "no trial started on the worker node"
            time.sleep(0.2)
        kill_session(cluster.worker.pid)  # the machine is gone: its raylet, object store and workers
        output, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, output
        parent, children = child_runs(server.uri)
        with tracking_uri(server.uri):
            running = mlflow.MlflowClient().search_runs(
                [parent.info.experiment_id], "attributes.status = 'RUNNING'")
    assert "4/4 done, 0 running, 0 failed" in output, output
    assert parent.info.status == "FINISHED" and not running
    assert sorted(int(r.data.tags["trial"]) for r in children) == [1, 2, 3, 4]  # each once, none lost
    assert all(r.info.status == "FINISHED" for r in children)
