"""CI: the workflows pass actionlint, run where and when they should, retrain from a cache that keeps DVC's
run-cache together with the MLflow store, and register nothing on pull requests; end to end, a fresh
runner with that cache restored retrains only the experiment whose params changed."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch

import mlflow
import pytest
import yaml
from helpers import (
    BIN,
    GIT,
    PROJECT,
    TINY,
    candidate,
    champion,
    cli_env,
    make_repo,
    run,
    shown,
    tracking_uri,
    write_params,
)
from packaging.specifiers import SpecifierSet

from pipeline.registry import REGISTER, promote_held, register_and_crown, registration_on, registry_decision

WORKFLOWS = PROJECT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(name: str) -> dict:
    found = workflow(name)
    return found.get("on", found.get(True))  # YAML 1.1 reads the key `on` as true


# --------------------------------------------------------------------------------------------------
# the workflow files


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint", path=str(BIN))
    assert actionlint, f"no actionlint in {BIN}: `make setup` installs it (the test extra)"
    files = sorted(WORKFLOWS.glob("*.yml"))
    # Without shellcheck or pyflakes: the findings are the same on every machine.
    result = subprocess.run([actionlint, "-no-color", "-shellcheck=", "-pyflakes=", *map(str, files)], cwd=PROJECT,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr


def test_ci_tests_every_supported_python_and_everything_on_the_lowest():
    requires = SpecifierSet(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"])
    supported = [v for v in ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15") if v in requires]
    matrix = workflow("ci.yml")["jobs"]["test"]["strategy"]["matrix"]["include"]
    targets = {entry["python"]: entry["target"] for entry in matrix}
    assert list(targets) == supported
    assert targets[supported[0]] == "test" and set(targets.values()) <= {"test", "test-fast"}
    makefile = re.search(r"^SUPPORTED := (.*)$", (PROJECT / "Makefile").read_text(), re.M)
    assert makefile and makefile[1].split() == supported  # make setup accepts what CI tests
    on = triggers("ci.yml")
    assert on["push"] == {"branches": ["main"]} and "pull_request" in on


def test_retrain_runs_on_pushes_to_main_and_pull_requests_only():
    on = triggers("retrain.yml")
    # A push to a PR's branch is tested as the PR; a tag is no change to retrain.
    assert on["push"]["branches"] == ["main"] and "tags" not in on["push"]
    assert set(on["pull_request"]) == {"paths"}
    assert on["push"]["paths"] == on["pull_request"]["paths"]


def test_retrain_watches_every_file_a_stage_depends_on():
    paths = triggers("retrain.yml")["push"]["paths"]
    stages = [stage.get("do", stage) for stage in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].values()]
    deps = {dep for stage in stages for dep in stage.get("deps", []) if "${" not in dep}
    outs = [re.sub(r"\$\{[^}]*\}", "*", next(iter(out)) if isinstance(out, dict) else out)
            for stage in stages for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]
    # The files in git that stages read (the code they run), and what else decides their results.
    listed = subprocess.run(["git", "ls-files", "--", *deps, ".dvc/plots"], cwd=PROJECT, capture_output=True, text=True)
    read = {f for f in listed.stdout.split() if not any(fnmatch(f, out) or fnmatch(f, f"{out}/*") for out in outs)}
    watched = read | {"params.yaml", "dvc.yaml", "pyproject.toml", "constraints.txt"}
    missed = sorted(f for f in watched if not any(fnmatch(f, pattern) for pattern in paths))
    assert not missed, f"retrain.yml does not run when these change: {missed}"


def test_retrain_caches_the_mlflow_store_with_the_dvc_cache():
    job = workflow("retrain.yml")["jobs"]["retrain"]
    uses = [step.get("uses", step.get("run", "")).split("@")[0] for step in job["steps"]]
    restore = job["steps"][uses.index("actions/cache/restore")]
    save = job["steps"][uses.index("actions/cache/save")]
    retrain = next(i for i, use in enumerate(uses) if "adder retrain-report" in use)
    assert uses.index("actions/cache/restore") < retrain < uses.index("actions/cache/save")
    # A train stage restored from the run-cache names its MLflow run, which evaluate reopens.
    for step in (restore, save):
        assert set(step["with"]["path"].split()) == {".dvc/cache", "mlflow.db", "mlartifacts"}
        assert step["with"]["key"].endswith("-${{ hashFiles('dvc.lock') }}")
    assert save["with"]["key"] == restore["with"]["key"] and restore["with"]["restore-keys"]
    # A cache of runs in the sqlite store is no use with a tracking server, nor the other way round.
    assert "secrets.MLFLOW_TRACKING_URI" in job["env"]["STORE"]


def test_retrain_registers_nothing_on_pull_requests():
    env = workflow("retrain.yml")["jobs"]["retrain"]["env"]
    assert env[REGISTER] == "${{ github.event_name == 'pull_request' && '0' || '1' }}"


# --------------------------------------------------------------------------------------------------
# ADDER_REGISTER=0: decided, not registered


def test_without_registration_candidates_are_judged_but_add_no_version(registry, monkeypatch):
    monkeypatch.setenv(REGISTER, "0")
    unregistered_run, first = candidate("add3", 0.5)
    assert (first["decision"], first["version"]) == ("not registered", "–")
    assert first["reason"] == "no champion yet; registration is off (ADDER_REGISTER=0)"
    assert registry.search_model_versions("name = 'adder-add3'") == []
    assert registry_decision(registry, unregistered_run)["decision"] == "not registered"

    monkeypatch.delenv(REGISTER)
    champion_run, crowned = candidate("add3", 0.6)
    assert (crowned["decision"], crowned["version"]) == ("promoted", "1")

    monkeypatch.setenv(REGISTER, "0")
    better, worse = candidate("add3", 0.9)[1], candidate("add3", 0.1)[1]
    assert better["reason"] == "higher test exact match; registration is off (ADDER_REGISTER=0)"
    assert worse["reason"] == "not higher than the champion's test exact match; registration is off (ADDER_REGISTER=0)"
    assert len(registry.search_model_versions("name = 'adder-add3'")) == 1 and champion(registry) == "1"
    # A run registered before keeps its version when it is scored again; nothing is held to promote later.
    with mlflow.start_run(run_id=champion_run):
        again = register_and_crown("add3", "models:/unused", champion_run, 0.6, "same test set")
    assert (again["version"], again["decision"]) == ("1", "promoted")  # as decided when it was crowned
    assert promote_held([unregistered_run]) == []


@pytest.mark.parametrize(("value", "on"), [(None, True), ("1", True), ("0", False), ("off", False), ("False", False)])
def test_registration_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(REGISTER, raising=False)
    else:
        monkeypatch.setenv(REGISTER, value)
    assert registration_on() is on


# --------------------------------------------------------------------------------------------------
# end to end: a fresh runner with the workflow's cache retrains what changed, and nothing else

CACHED = (".dvc/cache", "mlflow.db", "mlartifacts")  # retrain.yml's cache paths
CHANGED = "seed-seq2seq"  # a sequence model: evaluate registers it, unless registration is off


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The stages `dvc repro` ran; those restored from the run-cache print 'Stage ... is cached' instead."""
    return re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)


@pytest.mark.e2e
def test_a_fresh_runner_with_the_cache_retrains_only_the_changed_experiment(tmp_path):
    workspace = tmp_path / "adder"  # a runner checks out at the same path every time
    make_repo(workspace, TINY)
    first = run(["dvc", "repro"], workspace, timeout=600)
    assert first.returncode == 0, shown(first)
    for args in (GIT + ["add", "dvc.lock", "metrics"], GIT + ["commit", "-q", "-m", "reproduced"]):
        assert run(args, workspace).returncode == 0

    # The job ends: the Actions cache keeps CACHED, the runner and its checkout go.
    cache = tmp_path / "actions-cache"
    for path in CACHED:
        (cache / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(workspace / path, cache / path)
    shutil.move(workspace, tmp_path / "origin")

    # The next run, on a pull request changing one experiment: a new clone, the cache restored into it.
    result = run(GIT + ["clone", "-q", str(tmp_path / "origin"), str(workspace)], tmp_path)
    assert result.returncode == 0, shown(result)
    for path in CACHED:
        shutil.move(cache / path, workspace / path)
    params = copy.deepcopy(TINY)
    params["experiments"][CHANGED]["epochs"] += 1
    write_params(workspace, params)
    second = run(["dvc", "repro"], workspace, cli_env() | {"ADDER_REGISTER": "0", "ADDER_PROMOTE": "0"}, timeout=600)
    assert second.returncode == 0, shown(second)  # evaluate found every restored run in the restored store

    before, after = stages_run(first), stages_run(second)
    print(f"\nstages run: {len(before)} on an empty cache, {len(after)} on the restored one: {after}", end="")
    per_experiment = {f"{stage}@{e}" for stage in ("train", "evaluate") for e in TINY["experiments"]}
    generated = {f"generate@{t}" for t in TINY["tasks"]}
    assert set(before) == {*generated, *per_experiment, *(s for s in before if "@" not in s)}
    # Only the changed experiment trains; the stages over all experiments (no @item) run again as well.
    assert f"train@{CHANGED}" in after, shown(second)
    assert all(stage.endswith(f"@{CHANGED}") for stage in after if "@" in stage), after
    assert len(after) < len(before)
    restored = re.findall(r"Stage '([^']+)' is cached", second.stdout + second.stderr)
    unchanged = {"train@mapping-naive_mlp", "evaluate@mapping-naive_mlp"}
    assert {f"generate@{t}" for t in TINY["tasks"]} | unchanged <= set(restored), shown(second)

    with tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}"):
        client = mlflow.MlflowClient()
        versions = client.search_model_versions("name = 'adder-seed'")
        assert len(versions) == 1  # the first run's; the pull request's candidate was not registered
        run_id = yaml.safe_load((workspace / "models" / CHANGED / "run.json").read_text())["run_id"]
        assert registry_decision(client, run_id)["decision"] == "not registered"
