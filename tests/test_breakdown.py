"""Breakdowns of exact match on hand-made problems and predictions."""

import numpy as np
import pytest

from pipeline.breakdown import (
    BREAKDOWNS,
    breakdown_rows,
    breakdowns,
    column_borrows,
    column_carries,
    features,
    group_figures,
    step_kind,
)


@pytest.mark.parametrize(("operands", "carries"), [
    ([12, 50], 0), ([15, 5], 1), ([99, 1], 2), ([999, 1], 3), ([9, 9, 9], 1), ([55, 55, 55], 2), ([0, 0], 0),
])
def test_column_carries(operands, carries):
    assert column_carries(operands) == carries


@pytest.mark.parametrize(("a", "b", "borrows"),
                         [(50, 12, 1), (12, 50, 1), (99, 11, 0), (100, 1, 2), (1000, 1, 3), (7, 7, 0)])
def test_column_borrows(a, b, borrows):
    assert column_borrows(a, b) == borrows


def test_features():
    assert features("12+50", 62) == {"terms": "2", "digits": "2", "operation": "add", "brackets": "no",
                                     "carries": "0", "answer_length": "2"}
    assert features("3-50", -47) == {"terms": "2", "digits": "2", "operation": "sub", "brackets": "no",
                                     "carries": "1", "answer_length": "3"}
    assert features("(12+7)*3", 57)["operation"] == "mixed"
    assert features("(12+7)*3", 57)["brackets"] == "yes"
    assert features("(12+7)*3", 57)["carries"] == "n/a"
    assert features("2*3*4", 24)["operation"] == "mul"
    assert features("9+9+9+9", 36)["terms"] == "4"


def test_breakdowns_by_hand():
    texts = ["1+2", "9+9", "12+3", "5-7", "4*4", "4*5"]
    answers = [3, 18, 15, -2, 16, 20]
    predicted = ["3", "17", "15", "-2", "16", "21"]
    result = breakdowns(texts, answers, predicted)
    assert list(result) == list(BREAKDOWNS[:6])  # the step breakdowns need worked steps
    assert result["operation"] == {"add": {"count": 3, "exact_match": pytest.approx(2 / 3)},
                                   "mul": {"count": 2, "exact_match": 0.5},
                                   "sub": {"count": 1, "exact_match": 1.0}}
    assert result["carries"] == {"0": {"count": 3, "exact_match": 1.0}, "1": {"count": 1, "exact_match": 0.0},
                                 "n/a": {"count": 2, "exact_match": 0.5}}
    assert result["digits"] == {"1": {"count": 5, "exact_match": 0.6}, "2": {"count": 1, "exact_match": 1.0}}
    assert result["answer_length"]["2"] == {"count": 5, "exact_match": 0.6}
    assert result["terms"] == {"2": {"count": 6, "exact_match": pytest.approx(4 / 6)}}


def test_groups_in_natural_order():
    texts = [f"{n}+{n}" for n in (1, 50, 500, 5000, 50000, 500000, 5000000, 50000000, 500000000, 5000000000)]
    answers = [2 * int(t.split("+")[0]) for t in texts]
    assert list(breakdowns(texts, answers, np.array(answers).astype(str))["digits"]) == [str(n) for n in range(1, 11)]


def test_rows():
    result = breakdowns(["1+2", "2*3"], [3, 6], ["3", "5"])
    rows = breakdown_rows(result)
    assert {"breakdown": "operation", "group": "mul", "count": 1, "exact_match": 0.0} in rows
    assert {"breakdown": "operation", "group": "add", "count": 1, "exact_match": 1.0} in rows


def test_step_breakdowns_by_hand():
    texts = ["47*36", "(12+7)*3-40", "(12+7)*3-40", "12+50", "12+50"]
    answers = [1692, 17, 17, 62, 62]
    steps = ["0282+1410", "19*3-40;57-40", "19*3-40;57-40", "", ""]
    worked = ["0282+1400", "19*3-40;57-40", "19*3-40;57-40;17", "", ""]
    predicted = ["1682", "17", "17", "62", "61"]
    result = breakdowns(texts, answers, predicted, steps, worked)
    assert list(result) == list(BREAKDOWNS)
    # 47*36 goes wrong at its first step; one 12+50 only at its answer; the extra step of the third
    # problem stands where its answer should.
    assert result["first_wrong_step"] == {"1": {"count": 1, "exact_match": 0.0},
                                          "answer": {"count": 2, "exact_match": 0.5},
                                          "none": {"count": 2, "exact_match": 1.0}}
    assert result["step_kind"] == {"bracket": {"count": 2, "exact_match": 1.0},
                                   "partial_products": {"count": 1, "exact_match": 0.0},
                                   "product": {"count": 2, "exact_match": 1.0}}
    shares = group_figures("first_wrong_step", result["first_wrong_step"])  # where problems first go wrong
    assert (shares["1"], shares["answer"]) == (0.2, 0.4)
    assert group_figures("step_kind", result["step_kind"])["partial_products"] == 0.0


@pytest.mark.parametrize("before, step, kind", [
    ("47*36", "0282+1410", "partial_products"),
    ("40-19*13", "40-(0057+0190)", "partial_products"),
    ("40-(0057+0190)", "40-247", "bracket"),
    ("19*3-40", "57-40", "product"),
    ("2+3+4", "5+4", "sum"),
])
def test_step_kinds(before, step, kind):
    assert step_kind(before, step) == kind
