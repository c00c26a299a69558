"""End to end for the problem families and encodings: a tiny `dvc repro` of the terms, ops and brackets
tasks, each with its own encoding; breakdowns, figures and predict on each family. Reuses test_e2e's helpers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from test_e2e import BIN, make_repo, read_json, run, shown  # pytest puts tests/ on sys.path

TINY_FAMILIES = {
    "seed": 1,
    "tasks": {
        "terms": {"terms": 4, "min_terms": 2, "digits": 2, "train_size": 200, "val_size": 30, "test_size": 60},
        "ops": {"terms": 2, "digits": 2, "ops": "+-*", "train_size": 200, "val_size": 30, "test_size": 60},
        "brackets": {"terms": 3, "min_terms": 2, "digits": 2, "ops": "+-*", "brackets": True,
                     "train_size": 200, "val_size": 30, "test_size": 60},
    },
    "experiments": {
        "terms-seq2seq": {"task": "terms", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                          "samples_per_epoch": 50, "batch_size": 25, "padding": "per_term", "mask": True},
        "ops-seq2seq-integer_reversed": {"task": "ops", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                                         "samples_per_epoch": 50, "batch_size": 25, "encoding": "integer",
                                         "reverse": True},
        "brackets-seq2seq": {"task": "brackets", "model": "seq2seq", "units": [8, 8], "epochs": 2,
                             "samples_per_epoch": 50, "batch_size": 25, "encoding": "integer", "mask": True},
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
        metrics = read_json(repo / "metrics" / f"{name}.json")
        assert 0.0 <= metrics["exact_match"] <= 1.0
        breakdown = metrics["breakdown"]
        assert sum(c["count"] for c in breakdown["terms"].values()) == 60
        with (repo / "plots" / "breakdown" / name / "operation.csv").open() as f:
            assert list(csv.DictReader(f))[0].keys() == {"group", "count", "exact_match"}
        codec = read_json(repo / "models" / name / "codec.json")
        assert codec["encoding"] == exp.get("encoding", "onehot") and codec["reverse"] == exp.get("reverse", False)
    assert set(read_json(repo / "metrics" / "terms-seq2seq.json")["breakdown"]["terms"]) == {"2", "3", "4"}
    assert set(read_json(repo / "metrics" / "ops-seq2seq-integer_reversed.json")["breakdown"]["operation"]) == {"add", "sub", "mul"}
    assert "yes" in read_json(repo / "metrics" / "brackets-seq2seq.json")["breakdown"]["brackets"]
    figures = {p.name for p in (repo / "reports" / "figures").glob("*.png")}
    assert {"accuracy_vs_epoch.png", "breakdown_terms.png", "breakdown_operation.png"} <= figures
    table = (repo / "reports" / "comparison.md").read_text()
    assert "| ops-seq2seq-integer_reversed | ops | seq2seq | integer, reversed |" in table
    assert "## Exact match by operation" in table


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
