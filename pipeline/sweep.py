"""Sweeps on Ray: each trial (pipeline.trial) a Ray task on whichever node has room, in-process on this machine
or on a cluster; every finished trial an MLflow child run of one sweep run, tagged with its node.

The driver alone talks to MLflow: a trial returns its figures and the driver records them, once, when it
finishes. A node lost mid-trial is a system failure Ray retries on another node (RETRIES), so nothing is
recorded twice, no run is left RUNNING by a dead machine, and what finished before stays recorded."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Metric, Param, RunStatus, RunTag

from pipeline import problems, tracking
from pipeline.config import PARAMS_FILE, Params, load_params, project_root
from pipeline.errors import AdderError
from pipeline.space import Axis, dvc_command, grid, parse_axes, trial_params

# Here, not in pipeline.tracking, which every stage imports: a sweep's names stale no stage.
SWEEPS = "adder-sweeps"  # one run per `adder sweep` or `adder study`, a child run per trial
SWEEPS_NOTE = ("One run per `adder sweep` or `adder study`: its table of trials and the best configuration, with a "
               "child run per trial (its settings, figures, node, and the `dvc exp run` command that reproduces it).")
RETRIES = 3  # tries of a trial after its node or worker process dies; its own errors are not retried


@dataclass
class Trial:
    number: int
    exp_name: str
    overrides: dict
    params: Params
    handle: object = None  # the Optuna trial it was asked from, in a search
    result: dict | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides.items()) or "as in params.yaml"

    @property
    def command(self) -> str:
        return dvc_command(self.exp_name, self.overrides)

    @property
    def metrics(self) -> dict:
        return self.result["metrics"] if self.result else {}


@dataclass
class Plan:
    """Where trials come from: `ask` the next (None when done), `tell` it finished (a search learns from it)."""

    ask: Callable[[], Trial | None]
    tell: Callable[[Trial], None] = lambda trial: None
    size: int | None = None  # trials in all, when known in advance


def fixed(trials: list[Trial]) -> Plan:
    items = iter(trials)
    return Plan(lambda: next(items, None), size=len(trials))


def ray_address(address: str | None) -> str | None:
    """The cluster to join: --address, else $RAY_ADDRESS, else None (Ray starts in this process). Raises
    AdderError in one line when nothing answers at a host:port."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "auto" or "://" in address:
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise AdderError(f"--address {address}: expected host:port of a Ray head node (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise AdderError(f"no Ray cluster at {address} ({e.strerror or type(e).__name__}); start one with "
                         "`ray start --head`, or leave out --address to run on this machine") from None
    return address


def start_ray(address: str | None) -> None:
    import ray

    env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3", "RAY_DEDUP_LOGS": "0"}}
    try:
        if address is None:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, runtime_env=env)
        else:  # the driver's own code runs on every node, whatever each has installed of adder
            package = str(Path(__file__).parent)
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env={**env, "py_modules": [package]})
    except (ConnectionError, RuntimeError) as e:
        raise AdderError(f"cannot join the Ray cluster at {address}: {' '.join(str(e).split())[:200]}") from None


def remote_trial(params: Params, exp_name: str, splits: dict) -> dict:
    """What a Ray worker runs: the trial, and the node it ran on."""
    import ray

    from pipeline.trial import run_trial

    result = run_trial(params, exp_name, splits)
    return {**result, "node": ray.get_runtime_context().get_node_id(), "host": ray.util.get_node_ip_address()}


def task_splits(root: Path, params: Params, exp_names) -> dict[str, dict]:
    """Each task's train, val and test splits, read once by the driver: workers need no copy of the data."""
    tasks = {params.experiment(name).task for name in exp_names}
    splits = ("train", "val", "test")
    return {task: {split: problems.read_csv(root / "data" / task / f"{split}.csv") for split in splits}
            for task in sorted(tasks)}


@dataclass
class Recorder:
    """The sweep's MLflow runs: one parent, and a child per trial as it finishes."""

    name: str
    experiment_id: str
    tags: dict
    client: mlflow.MlflowClient = field(default_factory=mlflow.MlflowClient)

    def __post_init__(self) -> None:
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.name, tags=self.tags).info.run_id

    def trial(self, trial: Trial) -> None:
        result = trial.result or {}
        tags = {"mlflow.parentRunId": self.run_id, "trial": str(trial.number), "dvc_command": trial.command,
                **({"node": result["node"], "node.host": result["host"], "device": result["device"]}
                   if result else {"error": trial.error or ""})}
        now = int(time.time() * 1000)  # the run spans the trial's own time, not the moment it is recorded
        run = self.client.create_run(self.experiment_id, start_time=now - int(1000 * result.get("seconds", 0)),
                                     run_name=f"#{trial.number} {trial.exp_name} {trial.label}", tags=tags)
        exp = trial.params.experiment(trial.exp_name)
        params = {"experiment": trial.exp_name, "seed": trial.params.seeds_of(trial.exp_name)[0],
                  **exp.model_dump(exclude={"description", "seeds"})}
        metrics = [Metric(f"test_{k}" if k in ("exact_match", "char_accuracy", "rmse") else k, float(v), now, 0)
                   for k, v in trial.metrics.items()]
        for epoch, logs in enumerate(result.get("history", []), 1):
            metrics += [Metric(k, float(v), now, epoch) for k, v in logs.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics[:1000],
                              params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(
            RunStatus.FINISHED if trial.result else RunStatus.FAILED), end_time=now)

    def describe(self, text: str) -> None:
        """The run's description in the UI, and the same text as an artifact."""
        self.client.set_tag(self.run_id, tracking.NOTE, text)
        self.client.log_text(self.run_id, text, "summary.md")

    def finish(self, trials: list[Trial], best: Trial | None, status: str, extra: dict | None = None) -> None:
        done = [t for t in trials if t.result]
        table = pd.DataFrame([{"trial": t.number, "experiment": t.exp_name, **t.overrides,
                               "val_exact_match": t.metrics.get("val_exact_match"),
                               "test_exact_match": t.metrics.get("exact_match"), "node": (t.result or {}).get("host"),
                               "error": t.error or "", "command": t.command} for t in trials])
        if len(table):
            mlflow.log_table(table, "trials.json", run_id=self.run_id)
        metrics = {"trials_done": len(done), "trials_failed": sum(t.error is not None for t in trials), **(extra or {})}
        if best:
            metrics |= {"best_val_exact_match": best.metrics["val_exact_match"],
                        "best_test_exact_match": best.metrics["exact_match"]}
            tags = [RunTag("best.trial", str(best.number)), RunTag("best.command", best.command),
                    *(RunTag(f"best.{k}", str(v)) for k, v in best.overrides.items())]
            self.client.log_batch(self.run_id, tags=tags)
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(self.run_id, status)


def best_of(trials: list[Trial]) -> Trial | None:
    """The trial best on validation (the test split picks nothing), the earliest among equals."""
    done = [t for t in trials if t.result]
    return max(done, key=lambda t: (t.metrics["val_exact_match"], -t.number)) if done else None


def percent(value: float) -> str:
    return f"{value:.1%}"


def run(plan: Plan, params: Params, exp_names: list[str], name: str, address: str | None, cpus_per_trial: float,
        sweep_params: dict, say: Callable[[str], None] = print) -> tuple[list[Trial], Recorder]:
    """Runs the plan's trials of exp_names as Ray tasks, at most as many at once as the cluster has room
    for, recording each as it finishes; returns every trial and the sweep's recorder (its run ended)."""
    root = project_root()
    splits = task_splits(root, params, exp_names)  # missing data fails before anything starts
    tracking.connect(root, SWEEPS)  # so does an unreachable tracking server
    address = ray_address(address)  # and an address with no cluster behind it
    import ray

    start_ray(address)
    experiment = mlflow.get_experiment_by_name(SWEEPS)
    if not experiment.tags.get(tracking.NOTE):
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, tracking.NOTE, SWEEPS_NOTE)
    recorder = Recorder(name, experiment.experiment_id, tracking.run_tags(root, kind="sweep"))
    recorder.client.log_batch(recorder.run_id, params=[Param(k, str(v)[:6000]) for k, v in sweep_params.items()])
    say(f"{name}: MLflow run {recorder.run_id} ({SWEEPS}); Ray: {describe_cluster()}")
    trials: list[Trial] = []
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        for trial in in_flight(plan, splits, cpus_per_trial, trials):
            plan.tell(trial)
            recorder.trial(trial)
            say(progress_line(trial, trials, plan.size))
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    finally:
        best = best_of(trials)
        recorder.finish(trials, best, status)
        ray.shutdown()
    return trials, recorder


def in_flight(plan: Plan, splits: dict, cpus_per_trial: float, trials: list[Trial]) -> Iterator[Trial]:
    """Submits the plan's trials as room allows and yields each as it finishes (appended to trials). The
    plan may hold trials back until earlier ones are told (a study deciding its seeds): the sweep ends when
    it has nothing to ask and nothing runs."""
    import ray

    task = ray.remote(remote_trial).options(num_cpus=cpus_per_trial, max_retries=RETRIES, scheduling_strategy="SPREAD")
    shared = {name: ray.put(split) for name, split in splits.items()}
    pending: dict = {}
    try:
        while True:
            room = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))  # nodes may come and go
            while len(pending) < room and (trial := plan.ask()) is not None:
                trials.append(trial)
                task_split = shared[trial.params.experiment(trial.exp_name).task]
                pending[task.remote(trial.params, trial.exp_name, task_split)] = trial
            if not pending:
                return
            [ref], _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(ref)
            try:
                trial.result = ray.get(ref)
            except ray.exceptions.RayError as e:
                trial.error = first_line(e)
            yield trial
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def first_line(error: Exception) -> str:
    """A failed trial's cause in one line: the trial's own error when it raised one."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:300]


def describe_cluster() -> str:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus} CPUs"


def progress_line(trial: Trial, trials: list[Trial], size: int | None) -> str:
    done = [t for t in trials if t.result]
    failed = [t for t in trials if t.error]
    running = len(trials) - len(done) - len(failed)
    of = f"/{size}" if size else ""
    if trial.result:
        what = (f"validation {percent(trial.metrics['val_exact_match'])}, test {percent(trial.metrics['exact_match'])} "
                f"({trial.result['seconds']:.0f} s on {trial.result['host']})")
    else:
        what = f"failed: {trial.error}"
    best = best_of(trials)
    lead = f"; best so far #{best.number} ({best.label}) {percent(best.metrics['val_exact_match'])}" if best else ""
    return (f"#{trial.number} {trial.exp_name} {trial.label}: {what} | {len(done)}{of} done, {running} running, "
            f"{len(failed)} failed{lead}")


def searched(axes: list[Axis], make: Callable[[dict, object], Trial], trials: int, seed: int) -> Plan:
    """A search of the axes by Optuna's TPE sampler, `trials` in all: a list is a choice, a range low:high a
    number drawn from it (whole numbers when both bounds are; floats to 4 significant digits, so that each
    trial's command stays readable and runs exactly what the trial ran)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    asked = iter(range(trials))

    def suggest(handle, axis: Axis):
        if not axis.is_range:
            return axis.values[handle.suggest_categorical(axis.key, list(range(len(axis.values))))]
        if isinstance(axis.low, int) and isinstance(axis.high, int):
            return handle.suggest_int(axis.key, axis.low, axis.high, log=axis.log)
        return float(f"{handle.suggest_float(axis.key, axis.low, axis.high, log=axis.log):.4g}")

    def ask() -> Trial | None:
        if next(asked, None) is None:
            return None
        handle = study.ask()
        return make({axis.key: suggest(handle, axis) for axis in axes}, handle)

    def tell(trial: Trial) -> None:
        if trial.result:
            study.tell(trial.handle, trial.metrics["val_exact_match"])
        else:
            study.tell(trial.handle, state=optuna.trial.TrialState.FAIL)

    return Plan(ask, tell, trials)


def sweep(exp_name: str, settings: list[str], trials: int | None, address: str | None, cpus_per_trial: float,
          apply: bool, say: Callable[[str], None] = print) -> list[Trial]:
    """`adder sweep`: exp_name over a grid of settings, or `trials` drawn from a search space; every trial
    checked before the first starts. With apply, the best trial is then run as a DVC experiment."""
    root = project_root()
    raw = yaml.safe_load((root / PARAMS_FILE).read_text())
    params = load_params()
    params.experiment(exp_name)
    axes = parse_axes(settings)
    if not axes:
        raise AdderError("nothing to sweep: give one or more -S key=values (e.g. -S learning_rate=0.01,0.02)")
    counter = iter(range(1, 1_000_000))

    def make(overrides: dict, handle=None) -> Trial:
        return Trial(next(counter), exp_name, overrides, trial_params(raw, exp_name, overrides), handle)

    if trials is None:
        plan = fixed([make(overrides) for overrides in grid(axes)])  # every trial validated here
    else:
        if trials < 1:
            raise AdderError(f"--trials {trials}: at least 1")
        for axis in axes:  # every bound and choice validated here
            for value in ((axis.low, axis.high) if axis.is_range else axis.values):
                trial_params(raw, exp_name, {axis.key: value})
        plan = searched(axes, make, trials, params.seed)
    described = {"experiments": [exp_name], "axes": " ".join(settings), "mode": "grid" if trials is None else "search",
                 "trials": plan.size, "cpus_per_trial": cpus_per_trial}
    done, recorder = run(plan, params, [exp_name], f"sweep {exp_name}", address, cpus_per_trial, described, say)
    say(text := summary(done))
    recorder.describe(text)
    best = best_of(done)
    if best and apply:
        say(f"applying the best trial as a DVC experiment: {best.command}")
        applied_run = subprocess.run(shlex.split(best.command), cwd=root)
        if applied_run.returncode:
            raise AdderError(f"`{best.command}` failed (exit code {applied_run.returncode})")
    return done


def summary(trials: list[Trial]) -> str:
    """The trials as a table, best on validation first, with the command that reproduces each."""
    ranked = sorted(trials, key=lambda t: (t.result is None, -t.metrics.get("val_exact_match", 0), t.number))
    lines = ["", "| # | settings | validation | test | node | reproduce |", "|---|---|---|---|---|---|"]
    for t in ranked:
        figures = (f"{percent(t.metrics['val_exact_match'])} | {percent(t.metrics['exact_match'])} | {t.result['host']}"
                   if t.result else f"failed: {t.error} | – | –")
        lines.append(f"| {t.number} | {t.label} | {figures} | `{t.command}` |")
    best = best_of(trials)
    lines.append(f"\nbest on validation: #{best.number} ({best.label}); as a DVC experiment: {best.command}"
                 if best else "\nno trial finished")
    return "\n".join(lines)
