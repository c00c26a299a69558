"""End to end for the problem families and encodings: a tiny `dvc repro` of the terms, ops and brackets
tasks, each with its own encoding; breakdowns, figures and predict on each family. Its project is built by
helpers.make_repo, as test_e2e's are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import unavailable
from helpers import BIN, GIT, PROJECT, make_repo, read_json, run, shown

from pipeline.breakdown import BREAKDOWNS

# Headless Chromium as root on a machine without network: no sandbox, no background connections.
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
            "--virtual-time-budget=10000"]

TINY_FAMILIES = {
    "seed": 1,
    "backend": "jax",
    "tasks": {
        "terms": {"terms": 4, "min_terms": 2, "digits": 2, "train_size": 200, "val_size": 30, "test_size": 60},
        "ops": {"terms": 2, "digits": 2, "ops": "+-*", "train_size": 200, "val_size": 30, "test_size": 60},
        "brackets": {"terms": 3, "min_terms": 2, "digits": 2, "ops": "+-*", "brackets": True,
                     "train_size": 200, "val_size": 30, "test_size": 60},
        "deep": {"terms": 4, "digits": 2, "ops": "+-*", "brackets": True, "nesting": 2, "value_limit": 1000000,
                 "train_size": 0, "val_size": 0, "test_size": 30},
    },
    "experiments": {
        "terms-seq2seq": {"task": "terms", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                          "samples_per_epoch": 50, "batch_size": 25, "padding": "per_term", "mask": True},
        "ops-seq2seq-integer_reversed": {"task": "ops", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                                         "samples_per_epoch": 50, "batch_size": 25, "encoding": "integer",
                                         "reverse": True},
        "brackets-seq2seq": {"task": "brackets", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                             "samples_per_epoch": 50, "batch_size": 25, "encoding": "integer", "mask": True},
        "brackets-transformer-steps": {"task": "brackets", "model": "transformer", "units": [8], "epochs": 1,
                                       "samples_per_epoch": 50, "batch_size": 25, "answer": "steps",
                                       "eval_tasks": ["deep"]},
        "brackets-transformer-rewrite": {"task": "brackets", "model": "transformer", "units": [8], "epochs": 1,
                                         "samples_per_epoch": 50, "batch_size": 25, "answer": "rewrite",
                                         "eval_tasks": ["deep"]},
    },
}


@pytest.fixture(scope="module")
def families_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("families") / "repo", TINY_FAMILIES)
    result = run([str(BIN / "dvc"), "repro"], repo, timeout=900)
    assert result.returncode == 0, shown(result)
    return repo


@pytest.mark.e2e
def test_families_repro_writes_breakdowns_and_figures(families_repo):
    repo = families_repo
    for name, exp in TINY_FAMILIES["experiments"].items():
        evaluation = read_json(repo / "evaluation" / f"{name}.json")
        assert 0.0 <= evaluation["exact_match"] <= 1.0
        breakdown = evaluation["breakdown"]
        assert sum(c["count"] for c in breakdown["terms"].values()) == 60
        codec = read_json(repo / "models" / name / "codec.json")
        if exp["model"] == "seq2seq":
            assert codec["encoding"] == exp.get("encoding", "onehot") and codec["reverse"] == exp.get("reverse", False)
    breakdown = lambda name: read_json(repo / "evaluation" / f"{name}.json")["breakdown"]
    assert set(breakdown("terms-seq2seq")["terms"]) == {"2", "3", "4"}
    assert set(breakdown("ops-seq2seq-integer_reversed")["operation"]) == {"add", "sub", "mul"}
    assert "yes" in breakdown("brackets-seq2seq")["brackets"]
    figures = {p.name for p in (repo / "reports" / "figures").glob("*.png")}
    assert {"accuracy_vs_epoch.png", "breakdown_terms.png", "breakdown_operation.png"} <= figures
    table = (repo / "reports" / "comparison.md").read_text()
    assert "| ops-seq2seq-integer_reversed | ops | seq2seq | integer, reversed |" in table
    assert "## Exact match by operation" in table


def plot_specs(repo: Path, *command: str) -> dict[str, dict]:
    """{chart title: its filled vega-lite spec} from `dvc plots show|diff ... --json`."""
    result = run([str(BIN / "dvc"), "plots", *command, "--json"], repo)
    assert result.returncode == 0, shown(result)
    # A chart whose file the project lacks (no studies here) comes back empty.
    return {name: chart[0]["content"] for name, chart in json.loads(result.stdout)["data"].items() if chart}


def breakdown_charts() -> dict[str, str]:
    """{chart title: the breakdown it draws} from the project's dvc.yaml."""
    plots = [chart for plot in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"] for chart in plot.items()]
    return {title: Path(path).stem for title, spec in plots for path in spec["y"]
            if Path(path).parent.name in ("breakdown", "shares")}


@pytest.mark.e2e
def test_dvc_plots_are_a_handful_of_comparison_charts(families_repo):
    specs = plot_specs(families_repo, "show")
    charts = breakdown_charts()
    # One chart per breakdown, titled in words; the steps ones from the experiments that write steps.
    assert sorted(charts.values()) == sorted(BREAKDOWNS)
    assert all(not title.startswith("plots/") for title in charts)
    # Two learning-curve charts and one chart per breakdown, each with every experiment on it.
    assert set(specs) == {"Held-out exact match by epoch", "Held-out exact match by training seconds"} | set(charts)
    curves = specs["Held-out exact match by epoch"]
    assert {row["experiment"] for row in curves["data"]["values"]} == set(TINY_FAMILIES["experiments"])
    operation = specs["Exact match by operation"]
    assert operation["encoding"]["x"] == {**operation["encoding"]["x"], "field": "group", "type": "nominal"}
    assert operation["encoding"]["x"]["title"].startswith("operation")
    assert operation["encoding"]["row"]["field"] == "task"  # a row of bars per task: readable with many experiments
    assert {(row["experiment"], row["task"], row["group"]) for row in operation["data"]["values"]} >= {
        ("ops-seq2seq-integer_reversed", "ops", "mul"), ("brackets-seq2seq", "brackets", "mixed")}
    assert operation["encoding"]["y"]["title"] == "test exact match"
    shares = specs["Where worked steps first go wrong"]
    assert shares["encoding"]["y"] == {**shares["encoding"]["y"], "field": "share", "title": "share of test problems"}
    # each experiment that writes steps (a chain and a step model) shares out all its test problems
    totals = {}
    for row in shares["data"]["values"]:
        totals[row["experiment"]] = totals.get(row["experiment"], 0.0) + float(row["share"])
    writers = ("brackets-transformer-steps", "brackets-transformer-rewrite")
    assert totals == {name: pytest.approx(1.0) for name in writers}


@pytest.mark.e2e
def test_dvc_plots_diff_puts_two_revisions_on_one_chart(families_repo):
    """plots/ is committed with dvc.lock, so a past revision's charts are there to compare with."""
    for args in (GIT + ["add", "-A"], GIT + ["commit", "-qm", "pipeline outputs"]):
        result = run(args, families_repo)
        assert result.returncode == 0, shown(result)
    specs = plot_specs(families_repo, "diff", "HEAD")  # HEAD against the workspace
    for title in ("Held-out exact match by epoch", "Exact match by number of terms"):
        assert {row["rev"] for row in specs[title]["data"]["values"]} == {"HEAD", "workspace"}, title


@pytest.mark.e2e
def test_dvc_plots_render_offline_in_chromium(families_repo):
    """`make plots`' page, with local vega files, rendered by headless Chromium: every chart draws."""
    if not (shutil.which("chromium") and shutil.which("npm")):
        unavailable("needs Debian's chromium and npm (`make chromium`, as .ci/run does)")
    vega = run(["make", "-C", str(PROJECT), ".vega/node_modules/.package-lock.json"], PROJECT)
    assert vega.returncode == 0, shown(vega)
    (families_repo / ".vega").symlink_to(PROJECT / ".vega")
    page = run([str(BIN / "dvc"), "plots", "show", "--html-template", ".dvc/plots/page.html", "-o", "dvc_plots"],
               families_repo)
    assert page.returncode == 0, shown(page)
    dom = run(["chromium", *CHROMIUM, "--dump-dom", str(families_repo / "dvc_plots" / "index.html")], families_repo)
    # The learning curves, the studies (empty here: this project has none) and one per breakdown.
    charts = 3 + len(BREAKDOWNS)
    assert dom.stdout.count('class="marks"') == charts, shown(dom)  # vega-embed's canvas, one per chart


@pytest.mark.e2e
@pytest.mark.parametrize(("model", "good", "bad", "message"), [
    ("terms-seq2seq", "1 + 2 + 30", "1+2+3+4+5", "has 5 terms; this model was trained on 2..4"),
    ("ops-seq2seq-integer_reversed", "12*7", "12/7", "malformed expression '12/7'"),
    ("brackets-seq2seq", "(12+7)*3", "(12+7+3)", "brackets must enclose two or more terms but not all"),
])
def test_predict_on_each_family(families_repo, model, good, bad, message):
    ok = run([str(BIN / "adder"), "predict", good, "--model", model], families_repo)
    assert ok.returncode == 0, shown(ok)
    assert set(ok.stdout.strip()) <= set("-0123456789"), shown(ok)  # a tiny model may answer blank
    refused = run([str(BIN / "adder"), "predict", bad, "--model", model], families_repo)
    assert refused.returncode == 2 and message in refused.stderr, shown(refused)


@pytest.mark.e2e
def test_worked_steps_in_breakdowns_and_predict(families_repo):
    """A model trained with answer: steps: its steps broken down, and shown by predict --steps; a model
    without steps refuses --steps in one line."""
    breakdown = read_json(families_repo / "evaluation" / "brackets-transformer-steps.json")["breakdown"]
    assert sum(c["count"] for c in breakdown["first_wrong_step"].values()) == 60
    assert set(breakdown["step_kind"]) <= {"partial_products", "product", "bracket", "sum"}
    assert "bracket" in breakdown["step_kind"]
    assert "## Exact match by kind of worked step" in (families_repo / "reports" / "comparison.md").read_text()
    shown_steps = run([str(BIN / "adder"), "predict", "(12+7)*3", "--model", "brackets-transformer-steps",
                       "--steps"], families_repo)
    assert shown_steps.returncode == 0, shown(shown_steps)
    answer, *steps = shown_steps.stdout.rstrip("\n").split("\n")  # a tiny model writes anything, or nothing
    assert ";" not in answer and all(step.startswith("  ") and ";" not in step for step in steps), shown(shown_steps)
    refused = run([str(BIN / "adder"), "predict", "12*7", "--model", "ops-seq2seq-integer_reversed", "--steps"],
                  families_repo)
    assert refused.returncode == 2 and "--steps:" in refused.stderr and "trained without worked steps" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, shown(refused)


@pytest.mark.e2e
def test_step_model_and_a_task_deeper_than_training(families_repo):
    """A step model (answer: rewrite) trains on brackets' reductions and, like the worked-steps model, is
    scored on `deep`, a task no experiment trains on: nested brackets, problems none of brackets' training
    problems; predict --steps shows its rewrites, and a chain that goes wrong is a one-line error."""
    deep = read_json(families_repo / "data" / "deep" / "summary.json")
    assert deep["splits"]["train"]["size"] == 0 and deep["splits"]["test"]["size"] == 30
    for name in ("brackets-transformer-rewrite", "brackets-transformer-steps"):
        evaluation = read_json(families_repo / "evaluation" / f"{name}.json")
        held = evaluation["held_out"]["deep"]
        assert held["test_size"] == 30 and held["overlap_train"] == 0.0
        assert evaluation["exact_match_on_deep"] == held["exact_match"]
        assert read_json(families_repo / "metrics" / f"{name}.json")["exact_match_on_deep"] == held["exact_match"]
        assert "nested" in held["breakdown"]["brackets"]
    rewrite = read_json(families_repo / "evaluation" / "brackets-transformer-rewrite.json")
    assert rewrite["held_out"]["deep"]["readable"] == 1.0  # it reads expressions twice as long as it trained on
    assert sum(c["count"] for c in rewrite["breakdown"]["first_wrong_kind"].values()) == 60
    assert "## Tasks never trained on" in (families_repo / "reports" / "comparison.md").read_text()
    shown_steps = run([str(BIN / "adder"), "predict", "(12+7)*3", "--model", "brackets-transformer-rewrite",
                       "--steps"], families_repo)
    assert shown_steps.returncode in (0, 2), shown(shown_steps)  # a tiny model writes anything
    if shown_steps.returncode:
        assert shown_steps.stderr.startswith("error: ") and len(shown_steps.stderr.splitlines()) == 1
        assert "call " in shown_steps.stderr or "calls" in shown_steps.stderr, shown(shown_steps)
    else:
        answer, *steps = shown_steps.stdout.rstrip("\n").split("\n")
        assert answer.lstrip("-").isdigit() and all(step.startswith("  ") for step in steps), shown(shown_steps)


@pytest.mark.e2e
def test_predict_takes_a_task_and_says_which_model_answered(families_repo):
    """--model TASK routes among that task's models only; -v names the model that answered on stderr; an
    unknown name lists the trained ones."""
    answered = run([str(BIN / "adder"), "predict", "-v", "--model", "ops", "12*3"], families_repo)
    assert answered.returncode == 0 and answered.stdout.count("\n") == 1, shown(answered)  # a tiny model's answer
    assert answered.stderr == "answered by ops-seq2seq-integer_reversed\n", shown(answered)
    unknown = run([str(BIN / "adder"), "predict", "--model", "opz", "12*3"], families_repo)
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1, shown(unknown)
    assert "(trained: brackets-seq2seq, brackets-transformer-rewrite," in unknown.stderr, shown(unknown)
