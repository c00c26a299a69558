"""`adder exps` (`make exps`): `dvc exp show` narrowed to the changed params and the exact match of the
experiments they feed, readable at 120 columns even where every other figure moved by floating point rounding.

The end-to-end test runs a real `dvc exp run` in a temporary git repo whose one stage writes each experiment's
metrics from its params (no training, so it takes seconds); a dep that is not a param shifts every figure a
little between the committed run and the experiment, as another CPU's rounding does.
"""

from __future__ import annotations

import os

import pytest
import yaml
from helpers import BIN, GIT, adder, cli_env, run, shown

from pipeline.exps import NOTHING_CHANGED, changed_params, fed_by, flat, labelled, params_of, render

SCORE = """
import json, pathlib, yaml
params = yaml.safe_load(open("params.yaml"))
rounding = float(open("rounding.txt").read())  # another CPU: every figure a little off
pathlib.Path("metrics").mkdir(exist_ok=True)
for name, exp in params["experiments"].items():
    figures = {"exact_match": exp["epochs"] / 100 + rounding, "char_accuracy": 0.9 + rounding}
    pathlib.Path(f"metrics/{name}.json").write_text(json.dumps(figures))
"""
NAMES = [f"experiment-with-a-long-name-{i:02d}" for i in range(16)]


def workspace(params: dict, experiments: list[dict] | None = None) -> dict:
    """A `dvc exp show --json` baseline row holding params, with experiment rows."""
    return {"rev": "workspace", "data": {"params": {"params.yaml": {"data": params}}},
            "experiments": [{"revs": [{"data": {"params": {"params.yaml": {"data": p}}}}]} for p in experiments or []]}


def test_flat_names_params_as_dvc_does():
    assert flat({"experiments": {"a": {"epochs": 3, "units": [8, 8]}}, "seed": 1}) == {
        "experiments.a.epochs": 3, "experiments.a.units": [8, 8], "seed": 1}


def test_a_changed_param_feeds_its_experiment_its_task_feeds_every_experiment_on_it():
    base = {"seed": 1, "tasks": {"t": {"digits": 2}, "u": {"digits": 3}},
            "experiments": {"a": {"task": "t", "epochs": 3}, "b": {"task": "u", "epochs": 3},
                            "c": {"task": "u", "epochs": 3}}}
    changed_a = {**base, "experiments": {**base["experiments"], "a": {"task": "t", "epochs": 4}}}
    changed_u = {**base, "tasks": {**base["tasks"], "u": {"digits": 4}}}
    table = [params_of(data) for _, data in labelled([workspace(base, [changed_a, changed_u])])]
    changed = changed_params(table)
    assert changed == ["experiments.a.epochs", "tasks.u.digits"]
    assert fed_by(changed, table) == ["a", "b", "c"]
    assert fed_by(["seed"], table) == ["a", "b", "c"]
    assert fed_by(["experiments.b.units"], table) == ["b"]


def rendered(shown: list[dict]) -> str:
    from rich.console import Console

    console = Console(width=120, record=True, file=open(os.devnull, "w"))
    console.print(render(shown))
    return console.export_text()


def test_the_table_shows_the_changed_param_and_its_experiments_exact_match():
    base = {"experiments": {"a": {"epochs": 3}, "b": {"epochs": 3}}}
    metrics = {"metrics/a.json": {"data": {"exact_match": 0.5}}, "metrics/b.json": {"data": {"exact_match": 0.7}}}
    shown = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": base}}, "metrics": metrics}},
             {"rev": "abcdef0123", "name": "main", "data": {"params": {"params.yaml": {"data": base}},
                                                           "metrics": metrics},
              "experiments": [{"name": "exp-1", "revs": [{"rev": "123456789", "data": {
                  "params": {"params.yaml": {"data": {"experiments": {"a": {"epochs": 5}, "b": {"epochs": 3}}}}},
                  "metrics": {"metrics/a.json": {"data": {"exact_match": 0.9}}}}}]}]}]
    lines = rendered(shown).splitlines()
    assert lines[0].split() == ["Experiment", "a.epochs", "a", "exact", "match"], lines
    assert lines[1].split() == ["workspace", "3", "0.5000"] and lines[2].split() == ["main", "(abcdef0)", "3", "0.5000"]
    assert lines[3].split() == ["└──", "exp-1", "(1234567)", "5", "0.9000"], lines


def test_nothing_changed_says_so():
    params = {"experiments": {"a": {"epochs": 1}, "b": {"epochs": 1}}}
    shown = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": params}}}},
             {"rev": "abcdef0123", "name": "main", "data": {"params": {"params.yaml": {"data": params}}}}]
    assert rendered(shown).strip() == NOTHING_CHANGED


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A committed run of 16 experiments, then `dvc exp run` of one changed param on a machine that rounds
    differently."""
    folder = tmp_path_factory.mktemp("exps")
    (folder / "score.py").write_text(SCORE)
    (folder / "rounding.txt").write_text("0.001")
    params = {"experiments": {name: {"epochs": 50} for name in NAMES}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": {
        "cmd": "python score.py", "deps": ["score.py", "rounding.txt"], "params": ["experiments"],
        "metrics": [{f"metrics/{name}.json": {"cache": False}} for name in NAMES]}}}))
    for args in (GIT + ["init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "repro"],
                 GIT + ["add", "-A"], GIT + ["commit", "-q", "-m", "the committed run"]):
        result = run(args, folder, timeout=120)
        assert result.returncode == 0, shown(result)
    (folder / "rounding.txt").write_text("0")
    result = run([str(BIN / "dvc"), "exp", "run", "-S", f"experiments.{NAMES[7]}.epochs=90"], folder, timeout=120)
    assert result.returncode == 0, shown(result)
    return folder


@pytest.mark.e2e
def test_exps_leads_with_the_change_at_120_columns(repo):
    env_120 = {**cli_env(), "COLUMNS": "120"}
    # DVC's own --only-changed: every experiment's exact match moved, so the changed one is crowded out.
    crowded = run([str(BIN / "dvc"), "exp", "show", "--only-changed", "--no-pager"], repo,
                  env_120)
    assert crowded.returncode == 0, shown(crowded)
    assert f"experiments.{NAMES[7]}.epochs" not in crowded.stdout, crowded.stdout

    table = adder("exps", cwd=repo, env=env_120)
    assert table.returncode == 0, shown(table)
    lines = table.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines), table.stdout
    header = "".join(lines[:3]).replace(" ", "")  # a long header folds onto a second line
    assert f"{NAMES[7]}.epochs" in header and f"{NAMES[7]}exactmatch" in header, table.stdout
    assert not any(name in header for name in NAMES if name != NAMES[7]), table.stdout
    assert "0.9000" in table.stdout and "0.5010" in table.stdout, table.stdout  # the experiment's, the baseline's
