"""Digit columns and long problems: the digitwise framing and the length-generalisation test data."""

import numpy as np
import pytest

from pipeline.codec import ColumnCodec, Limits
from pipeline.digits import carry_steps, digit_columns, digits_to_text, long_problems
from pipeline.errors import AdderError


def test_digit_columns_least_significant_first():
    columns = digit_columns(["123+45", "7+8"], 4)
    assert columns.shape == (2, 4, 2)
    assert columns[0].tolist() == [[3, 5], [2, 4], [1, 0], [0, 0]]
    assert columns[1].tolist() == [[7, 8], [0, 0], [0, 0], [0, 0]]


@pytest.mark.parametrize("terms, expected", [(2, 1), (3, 1), (11, 1), (12, 2)])
def test_carry_steps(terms, expected):
    assert carry_steps(terms) == expected  # 9 * terms has 1 + carry_steps digits


@pytest.mark.parametrize("digits, terms", [(1, 2), (20, 3), (300, 2)])
def test_long_problems_are_exact(digits, terms):
    texts, answers = long_problems(50, digits, terms, np.random.default_rng(0))
    for text, answer in zip(texts, answers):
        operands = text.split("+")
        assert len(operands) == terms and all(len(o) == digits and o[0] != "0" for o in operands)
        assert int(answer) == sum(int(o) for o in operands)


def test_long_problems_deterministic():
    first = long_problems(20, 100, 2, np.random.default_rng(7))
    again = long_problems(20, 100, 2, np.random.default_rng(7))
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()


def test_digits_to_text_strips_leading_zeros():
    assert digits_to_text(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.int8)).tolist() == ["0", "1", "10"]


def test_column_codec_round_trip_and_any_length():
    codec = ColumnCodec(Limits(2, 0, 999))
    assert codec.train_steps == 4
    targets = codec.encode_targets(np.array([1998, 7, 0]))
    assert targets.tolist() == [[8, 9, 9, 1], [7, 0, 0, 0], [0, 0, 0, 0]]
    assert codec.decode(np.eye(10)[targets]).tolist() == ["1998", "7", "0"]
    x = codec.encode_inputs(["123+45"])
    assert x.shape == (1, 4, 20)
    assert x[0, 0, 3] == 1 and x[0, 0, 10 + 5] == 1  # units column: 3 and 5
    assert codec.encode_inputs(["1" * 50 + "+1"]).shape == (1, 51, 20)  # longer than trained: more steps


def test_column_codec_accepts_long_operands_once_measured_but_not_other_shapes():
    codec = ColumnCodec(Limits(2, 0, 999))
    with pytest.raises(AdderError, match="operands must be in 0..999"):
        codec.check("9" * 1000 + "+1")
    codec = codec.accepting(1000)
    assert codec.check("9" * 1000 + "+1") == "9" * 1000 + "+1"
    with pytest.raises(Exception, match="terms|operands|malformed"):
        codec.check("1+2+3")
