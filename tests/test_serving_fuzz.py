"""The served batch holds one output row per input row, in order, whatever the rows hold: line separators
(which str.splitlines splits on), empty strings, valid sums and garbage. The model is a stand-in that
answers sums exactly (helpers.ExactModel), so no Keras is needed; a row's answer must be the one the
same model gives that row alone, wherever it sits in the batch."""

from __future__ import annotations

import re

import pytest
import requests
from helpers import CODEC, ExactModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving import stand_in  # noqa: F401  the fixture; pytest puts tests/ on sys.path

from pipeline.codec import CharCodec
from pipeline.expressions import Limits
from pipeline.serving import AdderModel, not_a_string

# Every character str.splitlines splits on, and \r\n.
SEPARATORS = ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
SUM = re.compile(r"(\d{1,2})\+(\d{1,2})")

sums = st.tuples(st.integers(0, 99), st.integers(0, 99)).map(lambda t: f"{t[0]}+{t[1]}")
separators = st.sampled_from(SEPARATORS)
garbage = st.text(max_size=12) | st.text(alphabet="0123456789+ -*()", max_size=8)
pieces = st.one_of(sums, separators, garbage, st.just(""))
# Single pieces, and pieces joined: a sum with separators before, after or inside it.
rows = pieces | st.lists(pieces, min_size=2, max_size=4).map("".join)


def model() -> AdderModel:
    """Two stand-in members, so that rows are also routed: 1..10 sums first, then 0..99."""
    small = CharCodec(Limits(terms=2, low=1, high=10), encoding="integer")
    return AdderModel().ready([("small", ExactModel(small), small), ("add2", ExactModel(CODEC), CODEC)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(rows, max_size=20))
def test_one_output_row_per_input_row_in_order(batch):
    served = model()
    output = served.predict(None, batch).to_dict("records")
    assert len(output) == len(batch)
    for expression, row in zip(batch, output):
        assert row == served.predict(None, [expression]).to_dict("records")[0], (expression, row)
        if match := SUM.fullmatch(expression):  # a plain sum: answered, exactly
            assert row["answer"] == str(int(match[1]) + int(match[2])), (expression, row)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(rows | st.none() | st.integers(-5, 5) | st.booleans(), min_size=1, max_size=12))
def test_over_http_one_row_per_row_in_order_with_non_strings_in_their_place(stand_in, batch):  # noqa: F811
    """Through `adder serve`'s guard and MLflow's scoring server, which answer non-string rows apart from the
    strings and put them back in place."""
    served = AdderModel().ready([("add2", ExactModel(CODEC), CODEC)])  # what stand_in serves
    response = requests.post(f"{stand_in}/invocations", json={"inputs": batch}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    output = response.json()["predictions"]
    assert len(output) == len(batch)
    for value, row in zip(batch, output):
        expected = served.predict(None, [value]).to_dict("records")[0] if isinstance(value, str) else \
            {"answer": None, "error": not_a_string(value), "model": None}
        assert row == expected, (value, row)


@pytest.mark.parametrize("separator", SEPARATORS, ids=[repr(s) for s in SEPARATORS])
def test_a_separator_between_rows_never_splits_or_merges_them(separator):
    batch = ["12+50", separator, f"3+4{separator}", f"{separator}99+99", f"1+1{separator}2+2", "7+8"]
    output = model().predict(None, batch).to_dict("records")
    assert len(output) == len(batch)
    assert [output[0]["answer"], output[-1]["answer"]] == ["62", "15"]
    assert output[4]["answer"] is None  # two sums in one row are one malformed row, not two rows
