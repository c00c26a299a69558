"""Predict's expression check for every family, and the widths and alphabet a codec takes from it."""

import pytest

from pipeline.config import Task
from pipeline.errors import AdderError
from pipeline.expressions import Limits

TERMS = Limits(terms=4, low=0, high=99, min_terms=2)
OPS = Limits(terms=2, low=0, high=99, ops="+-*")
BRACKETS = Limits(terms=3, low=0, high=99, ops="+-*", min_terms=2, brackets=True)
FIXED = Limits(terms=2, low=100, high=999, ops="-")


def test_limits_of_a_family_task():
    task = Task(terms=3, min_terms=2, digits=2, ops="+-*", brackets=True, train_size=1, val_size=1, test_size=1)
    assert Limits.of(task) == BRACKETS
    fixed = Task(terms=2, digits=3, fixed_width=True, ops="-", train_size=1, val_size=1, test_size=1)
    assert Limits.of(fixed) == FIXED


@pytest.mark.parametrize(("limits", "alphabet", "in_width", "out_width"), [
    (Limits(2, 1, 10), "0123456789+ ", 5, 2),  # the tutorial's
    (TERMS, "0123456789+ ", 11, 3),  # 99+99+99+99 -> 396
    (OPS, "0123456789+-* ", 5, 5),  # 99*99 = 9801, 0-99 = -99: sign + 4 digits
    (BRACKETS, "0123456789+-*() ", 10, 7),  # (99*99)*99 = 970299, 0-99*99*99: sign + 6 digits
    (Limits(2, 0, 9, ops="*"), "0123456789* ", 3, 2),
])
def test_alphabet_and_widths(limits, alphabet, in_width, out_width):
    assert limits.alphabet == alphabet
    assert (limits.expression_width, limits.answer_width) == (in_width, out_width)


@pytest.mark.parametrize(("limits", "expression", "canonical"), [
    (TERMS, "1+2", "1+2"),
    (TERMS, " 01 + 2 +99 + 0 ", "1+2+99+0"),
    (OPS, "12 - 50", "12-50"),
    (OPS, "7*07", "7*7"),
    (BRACKETS, "(12+7)*3", "(12+7)*3"),
    (BRACKETS, " ( 12 + 7 ) * 3 ", "(12+7)*3"),
    (BRACKETS, "12-(7*3)", "12-(7*3)"),
    (BRACKETS, "12-7*3", "12-7*3"),
    (BRACKETS, "5*6", "5*6"),
    (FIXED, "100-999", "100-999"),
])
def test_accepts_what_the_task_produces(limits, expression, canonical):
    assert limits.check(expression) == canonical


@pytest.mark.parametrize(("limits", "expression", "message"), [
    (TERMS, "1", "'1' has 1 terms; this model was trained on 2..4"),
    (TERMS, "1+2+3+4+5", "has 5 terms; this model was trained on 2..4"),
    (TERMS, "1-2", "malformed expression '1-2': expected numbers joined by '\\+', like 12\\+50"),
    (TERMS, "100+1", "operands must be in 0..99"),
    (OPS, "1+2+3", "has 3 terms; this model was trained on 2"),
    (OPS, "1/2", "malformed expression '1/2': expected numbers joined by '\\+' or '-' or '\\*'"),
    (OPS, "(1+2)", "malformed"),
    (OPS, "-1+2", "malformed"),
    (OPS, "1**2", "malformed"),
    (BRACKETS, "(1+2)", "brackets must enclose two or more terms but not all of them"),
    (BRACKETS, "(1)+2+3", "brackets must enclose two or more terms"),
    (BRACKETS, "((1+2))*3", "malformed"),
    (BRACKETS, "(1+2)*(3+4)", "malformed"),
    (BRACKETS, "(1+2*3", "malformed"),
    (BRACKETS, "1+2)*3", "malformed"),
    (BRACKETS, "1(+2)*3", "malformed"),
    (BRACKETS, "1+2*3+4", "has 4 terms; this model was trained on 2..3"),
    (BRACKETS, "1 2+3", "malformed"),
    (FIXED, "99-100", "operands must be in 100..999"),
    (FIXED, "100+100", "malformed"),
])
def test_rejects_the_rest(limits, expression, message):
    with pytest.raises(AdderError, match=message) as e:
        limits.check(expression)
    assert "\n" not in str(e.value)


def test_brackets_only_where_trained():
    with pytest.raises(AdderError, match="malformed"):
        Limits(terms=3, low=0, high=99, ops="+-*").check("(1+2)*3")


def test_long_lines_refused_for_every_family():
    for limits in (TERMS, OPS, BRACKETS):
        with pytest.raises(AdderError, match="characters is too long"):
            limits.check("(" + "1*" * 600_000 + "1)")
