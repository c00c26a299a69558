"""Seeds and studies: their validation in params.yaml, the statistics, and the report's sentences.
The statistics are checked on synthetic 0/1 results whose answer is known; nothing here trains."""

import copy

import numpy as np
import pytest
import yaml
from helpers import PROJECT, error_of

from pipeline.config import load_params, parse_params
from pipeline.errors import AdderError
from pipeline.stats import aggregate, difference
from pipeline.studies import correct_matrix, seeds_section, studies_section, study_gaps, study_metrics

RAW = yaml.safe_load((PROJECT / "params.yaml").read_text())
BASE = {"task": "add3", "model": "seq2seq", "units": [100, 50], "epochs": 1, "batch_size": 8}


def params_with(experiments: dict, studies: dict | None = None) -> dict:
    raw = copy.deepcopy(RAW)
    raw["experiments"] = {"add3-seq2seq-a": BASE, **experiments}
    raw["studies"] = studies or {}
    return raw


def test_repo_studies_change_one_setting_each():
    """The encoding studies, whose differences are a few points, train three seeds each; the framing
    studies, a minute or two per model, train one and their interval spans the test problems alone."""
    params = load_params(PROJECT / "params.yaml")
    for study in params.studies:
        setting = params.study_setting(study)
        assert setting in {"encoding", "reverse", "padding", "mask", "answer"}
        if setting != "answer":
            assert all(len(params.seeds_of(name)) >= 3 for name in params.studies[study])


def test_seeds_default_to_the_top_level_seed():
    params = parse_params(params_with({"add3-seq2seq-b": {**BASE, "seeds": [3, 1, 2]}}))
    assert params.seeds_of("add3-seq2seq-a") == (params.seed,)
    assert params.seeds_of("add3-seq2seq-b") == (3, 1, 2)


def test_empty_seed_list_names_the_key():
    message = error_of(params_with({"add3-seq2seq-b": {**BASE, "seeds": []}}))
    assert message.startswith("params.yaml: experiments.add3-seq2seq-b.seeds:")
    assert "at least 1 item" in message


def test_repeated_seed_names_the_key_and_the_seed():
    message = error_of(params_with({"add3-seq2seq-b": {**BASE, "seeds": [1, 2, 1]}}))
    assert message == "params.yaml: experiments.add3-seq2seq-b.seeds: each seed once; 1 repeated (got [1, 2, 1])"


def test_a_study_names_the_setting_it_changes():
    raw = params_with({"add3-seq2seq-b": {**BASE, "mask": True, "seeds": [1, 2]}},
                      {"masking": ["add3-seq2seq-a", "add3-seq2seq-b"]})
    assert parse_params(raw).study_setting("masking") == "mask"


@pytest.mark.parametrize("other, studied, expected", [
    ({**BASE, "mask": True, "reverse": True}, None,
     "studies.s: add3-seq2seq-b differs from add3-seq2seq-a in 2 settings (reverse, mask); "
     "a study changes exactly one"),
    ({**BASE, "description": "the same"}, None,
     "studies.s: add3-seq2seq-b differs from add3-seq2seq-a in 0 settings (none); a study changes exactly one"),
    ({**BASE, "mask": True}, ["add3-seq2seq-a"], "studies.s: two or more distinct experiments"),
    ({**BASE, "mask": True}, ["add3-seq2seq-a", "add3-seq2seq-nope"],
     "studies.s: 'add3-seq2seq-nope' is not an experiment"),
    ({**BASE, "task": "add10"}, None, "studies.s: add3-seq2seq-b is of task 'add10'"),
])
def test_bad_studies_name_the_key(other, studied, expected):
    name = "add10-seq2seq-b" if other["task"] == "add10" else "add3-seq2seq-b"
    expected = expected.replace("add3-seq2seq-b is of", f"{name} is of")
    message = error_of(params_with({name: other}, {"s": studied or ["add3-seq2seq-a", name]}))
    assert message.startswith(f"params.yaml: {expected}"), message


def test_studies_changing_different_settings_are_refused():
    raw = params_with({"add3-seq2seq-b": {**BASE, "mask": True}, "add3-seq2seq-c": {**BASE, "reverse": True}},
                      {"s": ["add3-seq2seq-a", "add3-seq2seq-b", "add3-seq2seq-c"]})
    assert "studies.s: its experiments change different settings (mask, reverse)" in error_of(raw)


def test_aggregate_is_the_t_interval_over_seeds():
    spread = aggregate([0.5, 0.6, 0.7])
    assert (spread["mean"], spread["min"], spread["max"], spread["seeds"]) == (pytest.approx(0.6), 0.5, 0.7, 3)
    half = 4.3027 * 0.1 / np.sqrt(3)  # t(0.975, 2 degrees of freedom) times the standard error
    assert (spread["low"] == pytest.approx(0.6 - half, abs=1e-4)
            and spread["high"] == pytest.approx(0.6 + half, abs=1e-4))
    one = aggregate([0.42])
    assert (one["low"], one["mean"], one["high"]) == (0.42, 0.42, 0.42)


def results(rate_per_seed, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([rng.random(n) < rate for rate in rate_per_seed])


def test_a_large_consistent_gain_is_real():
    gap = difference(results([0.5, 0.52, 0.49]), results([0.7, 0.71, 0.69], seed=1))
    assert gap["real"] and 0.15 < gap["low"] < gap["difference"] < gap["high"] < 0.25


def test_the_same_results_are_not_a_difference():
    same = results([0.6, 0.6, 0.6])
    gap = difference(same, same)
    assert gap["difference"] == 0 and gap["low"] < 0 < gap["high"] and not gap["real"]


def test_seed_to_seed_spread_widens_the_interval():
    """A gain that a paired test on one seed would call real is noise when seeds disagree this much."""
    steady = difference(results([0.50, 0.50, 0.50]), results([0.55, 0.55, 0.55], seed=1))
    erratic = difference(results([0.50, 0.50, 0.50]), results([0.20, 0.95, 0.50], seed=1))
    assert steady["real"] and not erratic["real"]
    assert erratic["high"] - erratic["low"] > 5 * (steady["high"] - steady["low"])


def test_results_on_different_test_problems_are_refused():
    with pytest.raises(ValueError, match="same test problems"):
        difference(results([0.5]), results([0.5], n=100))


def evaluation(matrix: np.ndarray) -> dict:
    return {"per_seed": [{"seed": i + 1, "exact_match": float(row.mean()),
                          "correct": "".join("01"[int(v)] for v in row)}
                         for i, row in enumerate(matrix)]}


def test_the_report_writes_one_sentence_per_study_and_a_row_per_seeded_experiment():
    raw = params_with({"add3-seq2seq-b": {**BASE, "mask": True, "seeds": [1, 2, 3]},
                       "add3-seq2seq-c": {**BASE, "reverse": True, "seeds": [1, 2, 3]}},
                      {"masking": ["add3-seq2seq-a", "add3-seq2seq-b"],
                       "reversing": ["add3-seq2seq-a", "add3-seq2seq-c"]})
    raw["experiments"]["add3-seq2seq-a"] = {**BASE, "seeds": [1, 2, 3]}
    params = parse_params(raw)
    evaluations = {"add3-seq2seq-a": evaluation(results([0.5, 0.52, 0.49])),
                   "add3-seq2seq-b": evaluation(results([0.7, 0.71, 0.69], seed=1)),
                   "add3-seq2seq-c": evaluation(results([0.5, 0.51, 0.5], seed=2))}
    studies = studies_section(params, evaluations).splitlines()
    sentences = [line for line in studies if line.startswith("- ")]
    assert len(sentences) == 2
    assert sentences[0].startswith("- **masking** (add3): mask: False → True (add3-seq2seq-b) "
                                   "moves exact match from 50.")
    assert sentences[0].endswith(": a real difference.")
    assert sentences[1].endswith(": not distinguishable from noise.")
    # The same verdicts as MLflow metrics of the runs they judge: the difference and its interval.
    metrics = study_metrics(study_gaps(params, evaluations))
    assert set(metrics) == {"add3-seq2seq-b", "add3-seq2seq-c"}
    masking = metrics["add3-seq2seq-b"]
    assert set(masking) == {"study_masking_difference", "study_masking_low", "study_masking_high"}
    assert 0 < masking["study_masking_low"] < masking["study_masking_difference"] == pytest.approx(0.2, abs=0.03)
    assert metrics["add3-seq2seq-c"]["study_reversing_low"] < 0 < metrics["add3-seq2seq-c"]["study_reversing_high"]
    table = seeds_section(params, evaluations)
    b = correct_matrix("add3-seq2seq-b", evaluations["add3-seq2seq-b"]).mean(axis=1)
    assert f"| add3-seq2seq-b | 1, 2, 3 | {b.mean():.2%} | {b.min():.2%} | {b.max():.2%} |" in table
    assert table.count("\n| add3-") == 3


def test_a_study_missing_an_experiment_s_results_is_left_out():
    raw = params_with({"add3-seq2seq-b": {**BASE, "mask": True}}, {"masking": ["add3-seq2seq-a", "add3-seq2seq-b"]})
    assert studies_section(parse_params(raw), {"add3-seq2seq-a": evaluation(results([0.5]))}) == ""


def test_results_without_per_seed_figures_ask_for_a_new_evaluation():
    with pytest.raises(AdderError, match=r"evaluation/x.json has no per-seed results; re-run `adder evaluate x`"):
        correct_matrix("x", {"exact_match": 0.5})
