"""Fuzzing the expression checker and the served model's rows with Hypothesis: random strings (Unicode
digits, control characters, huge numbers, deep brackets and plain noise) are each answered or refused
with a one-line AdderError; no other exception escapes. The served model runs a stand-in that answers
sums exactly (helpers.ExactModel), so no Keras is needed."""

from __future__ import annotations

import pytest
from helpers import CODEC, ExactModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from pipeline.codec import CharCodec
from pipeline.errors import AdderError
from pipeline.expressions import MAX_EXPRESSION_CHARS, Limits
from pipeline.serving import AdderModel

LIMITS = [Limits(terms=2, low=0, high=99), Limits(terms=2, low=1, high=10),
          Limits(terms=3, low=0, high=999, min_terms=2), Limits(terms=2, low=0, high=99, ops="+-*"),
          Limits(terms=4, low=0, high=99, ops="+-*", brackets=True)]
EXAMPLES = 1000  # per grammar: 5,000 strings in all, and 333 batches

# Up to 12,000 digits (past the 4,300 that int() converts), with leading zeros or without.
numbers = st.text(alphabet="0123456789", min_size=1, max_size=8) | st.tuples(
    st.sampled_from(["", "0", "000"]), st.sampled_from("123456789"), st.integers(0, 12_000),
    st.sampled_from("0123456789"),
).map(lambda t: t[0] + t[1] + t[3] * t[2])
symbols = st.sampled_from(list("+-*() 0123456789"))
unicode_digits = st.sampled_from(["٣", "１", "߂", "𝟘", "²", "½", "Ⅻ", "৩"])
controls = st.characters(min_codepoint=0, max_codepoint=31) | st.sampled_from(["\x7f", "\u200b", "\u202e", "\ufeff"])
tokens = st.one_of(numbers, symbols, unicode_digits, controls, st.text(max_size=5))
expressions = st.one_of(
    st.lists(tokens, max_size=12).map("".join),
    st.text(max_size=60),
    st.integers(min_value=0, max_value=2_000).map(lambda depth: "(" * depth + "1+2" + ")" * depth),
    st.tuples(numbers, st.sampled_from("+-*"), numbers).map("".join),
)


def refused_in_one_line(limits: Limits, expression: str) -> str | None:
    try:
        return limits.check(expression)
    except AdderError as e:
        assert "\n" not in str(e) and len(str(e)) < 400, str(e)[:500]
        return None


@pytest.mark.parametrize("limits", LIMITS,
                         ids=lambda limits: f"{limits.terms}x{limits.high}{limits.ops}{limits.brackets}")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions)
def test_checker_answers_or_refuses_in_one_line(limits, expression):
    canonical = refused_in_one_line(limits, expression)
    if canonical is not None:  # accepted: canonical, and accepted again as it is
        assert len(canonical) <= len(expression) and limits.check(canonical) == canonical


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(expressions | st.none() | st.integers(), max_size=8))
def test_served_rows_are_each_answered_or_refused(batch):
    small = CharCodec(Limits(terms=2, low=1, high=10), encoding="integer")
    model = AdderModel().ready([("small", ExactModel(small), small), ("add2", ExactModel(CODEC), CODEC)])
    if any(isinstance(e, str) and len(e) > MAX_EXPRESSION_CHARS for e in batch):
        with pytest.raises(MlflowException) as raised:
            model.predict(None, batch)
        assert raised.value.get_http_status_code() == 400
        return
    rows = model.predict(None, batch).to_dict("records")
    assert len(rows) == len(batch)
    for expression, row in zip(batch, rows):
        assert (row["answer"] is None) == (row["model"] is None) != (row["error"] is None), row
        if row["error"] is not None:
            assert "\n" not in row["error"] and len(row["error"]) < 800, row["error"][:900]
        else:
            assert int(row["answer"]) == sum(int(term) for term in expression.split("+")), (expression, row)
