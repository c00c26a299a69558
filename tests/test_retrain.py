"""`adder retrain-report`: the markdown it renders, the base revision it picks, champions held back and
promoted, and end to end a git repo with two commits of different params."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from helpers import (
    GIT,
    TINY,
    candidate,
    champion,
    cli_env,
    make_repo,
    one_error_line,
    read_json,
    run,
    shown,
    write_params,
)

from pipeline import retrain
from pipeline.errors import AdderError
from pipeline.registry import promote_held, registry_decision
from pipeline.retrain import Comparison, render

# --------------------------------------------------------------------------------------------------
# rendering


def comparison(**changes) -> Comparison:
    fields = dict(
        base="HEAD~1", base_commit="a" * 40, head_commit="b" * 40,
        params={"experiments.add3-seq2seq.epochs": {"old": 8, "new": 12, "diff": 4},
                "experiments.add3-seq2seq.units": {"old": "[100, 50]", "new": "[128, 64]"},
                "experiments.add3-new.task": {"old": None, "new": "add3"}},
        metrics={"add3-seq2seq": {"exact_match": {"old": 0.25, "new": 0.5, "diff": 0.25},
                                  "char_accuracy": {"old": 0.9, "new": 0.85, "diff": -0.05},
                                  "train_seconds": {"old": 10.0, "new": 12.5, "diff": 2.5},
                                  "seconds_to_99": {"old": 3.0, "new": 2.0, "diff": -1.0},
                                  "breakdown.terms.2.exact_match": {"old": 0.2, "new": 0.4, "diff": 0.2}},
                 "mapping-naive_mlp": {"rmse": {"old": 0.5, "new": 0.25, "diff": -0.25}}},
        figures=["figures/accuracy_vs_epoch.png", "figures/breakdown_terms.png"], table="comparison.md")
    return Comparison(**{**fields, **changes})


def test_report_shows_each_param_change_old_and_new():
    text = render(comparison())
    assert "| `experiments.add3-seq2seq.epochs` | `8` | `12` |" in text
    assert "| `experiments.add3-seq2seq.units` | `[100, 50]` | `[128, 64]` |" in text
    assert "| `experiments.add3-new.task` | – | `add3` |" in text and "– : not set." in text
    assert "not set" not in render(comparison(params={"seed": {"old": 1, "new": 2}}))
    assert "compared with `aaaaaaa` (HEAD~1): 3 params changed, metrics of 2 experiments changed" in text


def test_report_shows_metric_changes_with_their_direction_and_leaves_timings_out():
    text = render(comparison())
    assert "| add3-seq2seq | exact_match | 25.00% | 50.00% | +25.00 pp (better) |" in text
    assert "| add3-seq2seq | char_accuracy | 90.00% | 85.00% | -5.00 pp (worse) |" in text
    assert "| mapping-naive_mlp | rmse | 0.5000 | 0.2500 | -0.25 (better) |" in text
    # Exact match before char accuracy; breakdowns folded away; timings nowhere.
    assert text.index("| add3-seq2seq | exact_match |") < text.index("| add3-seq2seq | char_accuracy |")
    assert "<details><summary>1 other changed values" in text
    assert "| add3-seq2seq | breakdown.terms.2.exact_match | 20.00% | 40.00% | +20.00 pp |" in text
    assert "train_seconds" not in text and "seconds_to_99" not in text
    assert "no committed metrics" not in text


def test_report_says_so_when_nothing_changed():
    text = render(comparison(params={}, metrics={}, figures=[], table=None))
    assert "No params changed." in text and "No metric changed" in text and "## Plots" not in text


def test_report_says_when_the_base_has_no_committed_metrics():
    new = {"add3-seq2seq": {"exact_match": {"old": None, "new": 0.5}}}
    assert "The base revision has no committed metrics" not in render(comparison(metrics=new))  # a new experiment
    text = render(comparison(metrics=new, base_has_metrics=False))
    assert "| add3-seq2seq | exact_match | – | 50.00% | new |" in text
    assert "The base revision has no committed metrics" in text


def test_report_embeds_the_figures_locally_and_names_them_in_ci():
    local = render(comparison())
    assert "![accuracy_vs_epoch](figures/accuracy_vs_epoch.png)" in local
    assert "side by side: [comparison.md](comparison.md)" in local
    url = "https://github.com/o/r/actions/runs/7"
    ci = render(comparison(run_url=url))
    assert "![" not in ci and f"[this run]({url})" in ci and "`breakdown_terms.png`" in ci


def test_report_lists_champion_decisions():
    decisions = [{"experiment": "add3-seq2seq", "model": "adder-add3", "version": "4", "decision": "held",
                  "reason": "higher test exact match; promotion is off (ADDER_PROMOTE=0)",
                  "candidate_exact_match": 0.5, "champion_exact_match": 0.25}]
    text = render(comparison(registry=decisions))
    assert "| add3-seq2seq | adder-add3 | 4 | held | higher test exact match; promotion is off" in text
    assert "| 50.00% | 25.00% |" in text and "No champion moves without `--promote`" in text


def test_dvc_diffs_are_keyed_by_param_and_by_experiment():
    assert retrain.params_changes({"params.yaml": {"seed": {"old": 1, "new": 2}}, "other.yaml": {"x": {}}}) == {
        "seed": {"old": 1, "new": 2}, "other.yaml:x": {}}
    assert retrain.metrics_changes({"metrics/add3-seq2seq.json": {"rmse": {}}, "elsewhere/m.json": {"a": {}}}) == {
        "add3-seq2seq": {"rmse": {}}, "elsewhere/m.json": {"a": {}}}


# --------------------------------------------------------------------------------------------------
# the base revision, in real git repositories


def git(repo: Path, *args: str) -> str:
    result = subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, env=cli_env())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def commit(repo: Path, message: str) -> str:
    (repo / "file.txt").write_text(message)
    git(repo, "add", "file.txt")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_BASE_REF", raising=False)
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_base_defaults_to_the_previous_commit_on_main(repo):
    first = commit(repo, "one")
    commit(repo, "two")
    assert retrain.resolve_base(repo, None) == (first, "HEAD~1")


def test_base_defaults_to_the_merge_base_on_a_branch(repo, monkeypatch):
    fork = commit(repo, "one")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "two")
    commit(repo, "three")
    assert retrain.resolve_base(repo, None) == (fork, "merge-base with main")
    monkeypatch.setenv("GITHUB_BASE_REF", "feature")  # a pull request into feature: nothing to merge, HEAD~1
    assert retrain.resolve_base(repo, None)[1] == "HEAD~1"


def test_a_named_base_is_resolved_to_its_commit(repo):
    first = commit(repo, "one")
    commit(repo, "two")
    git(repo, "tag", "v1", first)
    assert retrain.resolve_base(repo, "v1") == (first, "v1")


def test_a_missing_base_is_a_clear_error(repo, tmp_path_factory):
    with pytest.raises(AdderError, match="no commit yet"):
        retrain.resolve_base(repo, None)
    commit(repo, "one")
    with pytest.raises(AdderError, match="base revision 'nosuch' not found"):
        retrain.resolve_base(repo, "nosuch")
    with pytest.raises(AdderError, match="HEAD has no parent"):
        retrain.resolve_base(repo, None)
    elsewhere = tmp_path_factory.mktemp("not-a-repo")
    with pytest.raises(AdderError, match="is not in a git repository"):
        retrain.resolve_base(elsewhere, None)


# --------------------------------------------------------------------------------------------------
# champions: held while promotion is off, crowned by --promote


def test_without_promotion_a_winner_is_held_until_promoted(registry, monkeypatch):
    assert candidate("add3", 0.5)[1]["decision"] == "promoted"
    monkeypatch.setenv("ADDER_PROMOTE", "0")
    held_run, held = candidate("add3", 0.7)
    kept_run, kept = candidate("add3", 0.4)
    assert (held["decision"], kept["decision"]) == ("held", "kept")
    assert held["reason"] == "higher test exact match; promotion is off (ADDER_PROMOTE=0)"
    assert champion(registry) == "1"
    assert registry_decision(registry, held_run)["decision"] == "held"

    promoted = promote_held([held_run, kept_run])
    assert [(d["version"], d["decision"]) for d in promoted] == [("2", "promoted")]
    assert champion(registry) == "2"
    assert registry_decision(registry, held_run)["decision"] == "promoted"
    assert registry_decision(registry, kept_run)["decision"] == "kept"
    assert promote_held([held_run, kept_run]) == []


# --------------------------------------------------------------------------------------------------
# end to end: two commits of different params, a real `dvc repro` and real diffs

EXPERIMENT, REGISTERED = "mapping-naive_mlp", "seed-seq2seq"


def tiny(epochs: int) -> dict:
    """The tiniest project: the mapping MLP (which registers no model) and the seed task's seq2seq (which
    registers versions of adder-seed), both trained for `epochs`."""
    return {"seed": TINY["seed"], "backend": TINY["backend"], "tasks": TINY["tasks"],
            "experiments": {name: {**TINY["experiments"][name], "epochs": epochs} for name in (EXPERIMENT, REGISTERED)}}


@pytest.mark.e2e
def test_retrain_report_shows_the_params_change_and_its_metric_change_and_promotes(tmp_path):
    started = time.monotonic()
    repo = make_repo(tmp_path / "adder", tiny(epochs=2))
    env = {k: v for k, v in cli_env().items() if not k.startswith("GITHUB_")}
    # Up to the metrics only (the report's own repro draws the figures); metrics/ is committed with dvc.lock.
    # Registered, not promoted: a branch's run, as CI runs it off main.
    steps = [(["dvc", "repro", "--glob", "evaluate*"], 300), (GIT + ["add", "dvc.lock", "metrics"], 30),
             (GIT + ["commit", "-q", "-m", "params A, reproduced"], 30)]
    for args, timeout in steps:
        result = run(args, repo, {**env, "ADDER_PROMOTE": "0"}, timeout=timeout)
        assert result.returncode == 0, shown(result)
    before = read_json(repo / "metrics" / f"{EXPERIMENT}.json")
    write_params(repo, tiny(epochs=8))
    result = run(GIT + ["commit", "-q", "-am", "more epochs"], repo)
    assert result.returncode == 0, shown(result)

    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "summary.md")
    result = run(["adder", "retrain-report", "--base", "HEAD~1", "--promote"], repo, env)  # main's run
    assert result.returncode == 0, shown(result)
    after = read_json(repo / "metrics" / f"{EXPERIMENT}.json")  # retrained by the report's `dvc repro`
    report = (repo / "reports" / "retrain.md").read_text()

    for name in (EXPERIMENT, REGISTERED):
        assert f"| `experiments.{name}.epochs` | `2` | `8` |" in report, report
    assert after["rmse"] < before["rmse"]  # 8 epochs fit better than 2
    rmse = f"| {EXPERIMENT} | rmse | {before['rmse']:.4f} | {after['rmse']:.4f} | {after['rmse'] - before['rmse']:+.4g}"
    assert rmse in report, report
    assert "2 params changed, metrics of 2 experiments changed" in report, report
    assert "![accuracy_vs_epoch](figures/accuracy_vs_epoch.png)" in report
    assert (repo / "reports" / "figures" / "accuracy_vs_epoch.png").is_file()
    assert (tmp_path / "summary.md").read_text() == report + "\n"  # the job summary gets the same report
    assert "wrote" in result.stdout and "changed params: 2, experiments with changed metrics: 2" in result.stdout

    # ADDER_PROMOTE reached evaluate through `dvc repro`: version 1 (params A) was held, and version 2,
    # the retrained one, became the champion (there was none to beat); the report says so.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    assert client.get_model_version_by_alias("adder-seed", "champion").version == 2
    held = client.get_run(client.get_model_version("adder-seed", "1").run_id).data.tags["registry.decision"]
    assert held == "held"
    assert "Champions may move (`--promote`, the main branch)." in report, report
    assert f"| {REGISTERED} | adder-seed | 2 | promoted |" in report, report
    assert client.get_model_version_by_alias("adder-all", "champion").tags["members"] == "adder-seed/2"

    error = one_error_line(run(["adder", "retrain-report", "--no-repro", "--base", "nosuch"], repo, env))
    assert "base revision 'nosuch' not found" in error
    print(f"\nretrain-report end to end: {time.monotonic() - started:.0f}s", end="")
