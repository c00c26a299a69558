"""The codecs encode whole batches as character matrices; every result here is checked against the plain
string-at-a-time Python it replaces, on random problems of every family and on awkward strings."""

import itertools
import re

import numpy as np
import pytest
from helpers import task_with

from pipeline.codec import CharCodec, ColumnCodec, NumberCodec
from pipeline.codec.matrices import (
    char_matrix,
    number_chars,
    operand_digits,
    pad_operands,
    place_digits,
    right_aligned,
    row_cumsum,
)
from pipeline.digits import digit_columns
from pipeline.errors import AdderError
from pipeline.expressions import Limits
from pipeline.problems import sample_problems

task = task_with(terms=2, digits=3, train_size=1, val_size=1, test_size=1)
TASKS = {
    "add3": task(),
    "seed": task(digits=None, min_value=1, max_value=10),
    "terms": task(terms=4, min_terms=2),
    "brackets": task(terms=3, min_terms=2, digits=2, ops="+-*", brackets=True),
    "fixed_width": task(terms=3, fixed_width=True, ops="-*"),
    "add18": task(digits=18),
}
OPTIONS = list(itertools.product(["onehot", "integer"], [False, True], ["left", "per_term"], [False, True]))


def problems(name: str, n: int = 2000):
    return sample_problems(TASKS[name], n, np.random.default_rng(3))


# The string path, one string at a time.

def string_layout(codec: CharCodec, text: str) -> str:
    if codec.padding == "per_term":
        text = re.sub(r"[0-9]+", lambda m: m[0].rjust(codec.limits.operand_width), text)
    return text[::-1] if codec.reverse else text


def string_codes(codec: CharCodec, texts, width: int) -> np.ndarray:
    codes = [[codec.alphabet.index(c) for c in t.rjust(width)] for t in texts]
    return np.array(codes, dtype=np.intp).reshape(len(texts), width)


def string_inputs(codec: CharCodec, texts) -> np.ndarray:
    codes = string_codes(codec, [string_layout(codec, t) for t in texts], codec.in_width)
    if codec.encoding == "integer":
        return (codes - codec.pad_code) % codec.n_symbols
    x = np.eye(codec.n_symbols)[codes]
    if codec.mask:
        x[codes == codec.pad_code] = 0
    return x


def string_targets(codec: CharCodec, answers) -> np.ndarray:
    codes = string_codes(codec, [str(a) for a in answers], codec.out_width)
    return codes if codec.encoding == "integer" else np.eye(codec.n_symbols)[codes]


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("options", OPTIONS, ids=["-".join(map(str, o)) for o in OPTIONS])
def test_char_codec_encodes_as_the_string_path(name, options):
    encoding, reverse, padding, mask = options
    codec = CharCodec(Limits.of(TASKS[name]), encoding=encoding, reverse=reverse, padding=padding, mask=mask)
    batch = problems(name, 300)
    x, y = codec.training_pair(batch.text, batch.answer)
    assert x.dtype == y.dtype == (np.int32 if encoding == "integer" else np.float32)
    np.testing.assert_array_equal(x, string_inputs(codec, batch.text.tolist()))
    np.testing.assert_array_equal(y, string_targets(codec, batch.answer.tolist()))
    # layout() is the same transformation, written one string at a time
    assert codec.layout(batch.text).tolist() == [string_layout(codec, t) for t in batch.text.tolist()]


@pytest.mark.parametrize("answers", [
    np.arange(-5, 6), np.array([0, 7, 7, 7, 7, 7, 1998]), np.array([10**17, 3, -42]), np.array([], dtype=np.int64),
], ids=["small-range", "repeats", "wide-range", "none"])
def test_targets_from_numbers_strings_and_lists_agree(answers):
    codec = CharCodec(Limits(terms=3, low=0, high=10**17, ops="+-"))
    expected = string_targets(codec, answers.tolist())
    for given in (answers, answers.tolist(), answers.astype(str)):
        np.testing.assert_array_equal(codec.encode_targets(given), expected)


def test_char_matrix_views_the_strings():
    texts = np.array(["12+50", "", "7"])
    chars, lengths = char_matrix(texts)
    assert np.shares_memory(chars, texts) and chars.dtype == np.uint32
    assert chars.tolist() == [[ord(c) for c in "12+50"], [0] * 5, [ord("7")] + [0] * 4]
    assert lengths.tolist() == [5, 0, 1]
    assert char_matrix([])[0].shape == (0, 1)


def random_strings(n: int, alphabet: str, longest: int, rng) -> list[str]:
    return ["".join(rng.choice(list(alphabet), size=rng.integers(0, longest + 1))) for _ in range(n)]


@pytest.mark.parametrize("reverse", [False, True])
def test_right_aligned_is_rjust(reverse):
    texts = random_strings(500, "0123456789+-*() é\u4e00", 9, np.random.default_rng(0))
    for width in (9, 12):
        aligned = right_aligned(*char_matrix(texts), width, reverse)
        expected = [(t[::-1] if reverse else t).rjust(width) for t in texts]
        assert aligned.astype(np.uint32).view(f"U{width}")[:, 0].tolist() == expected


def test_pad_operands_pads_every_run_of_digits():
    texts = random_strings(500, "0123456789+-*()", 12, np.random.default_rng(1)) + ["", "(1+22)*3", "123456"]
    chars, lengths = pad_operands(*char_matrix(texts), 4)
    expected = [re.sub(r"[0-9]+", lambda m: m[0].rjust(4), t) for t in texts]
    assert lengths.tolist() == [len(t) for t in expected]
    assert chars.view(f"U{chars.shape[1]}")[:, 0].tolist() == expected  # zero past each end, like a str array


def test_number_chars_is_rjust_of_str():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.integers(-(10**18), 10**18, 300), rng.integers(-999, 1000, 300),
                             [0, -1, 10**18, -(10**18)]])
    for width in (20, 25):
        chars = np.ascontiguousarray(number_chars(values, width))
        assert chars.view(f"U{width}")[:, 0].tolist() == [str(v).rjust(width) for v in values.tolist()]
    with pytest.raises(AdderError, match="longer than the model's 3 characters"):
        number_chars(np.array([5, -100]), 3)


def test_row_cumsum():
    values = np.random.default_rng(3).integers(0, 3, size=(40, 7))
    np.testing.assert_array_equal(row_cumsum(values), np.cumsum(values, axis=1))
    np.testing.assert_array_equal(row_cumsum(values > 0), np.cumsum(values > 0, axis=1))


@pytest.mark.parametrize("name", ["add3", "terms", "add18"])
def test_operand_digits_as_digit_columns(name):
    texts = problems(name).text
    terms = TASKS[name].terms
    np.testing.assert_array_equal(operand_digits(*char_matrix(texts), terms), digit_columns(texts, terms=terms))
    odd = ["007+1", "1+", "+5", "9" * 40 + "+1"]
    np.testing.assert_array_equal(operand_digits(*char_matrix(odd), 2), digit_columns(odd, terms=2))


@pytest.mark.parametrize(("text", "message"), [("1+2+3", "more than 2 numbers"),
                                               ("1 + 2", "expected numbers joined by"),
                                               ("1-2", "expected numbers joined by"), ("1+\u0662", "expected numbers")])
def test_operand_digits_refuses_other_shapes(text, message):
    with pytest.raises(AdderError, match=message):
        operand_digits(*char_matrix([text]), 2)


def test_place_digits_as_digit_columns():
    values = np.concatenate([np.random.default_rng(4).integers(0, 10**12, 200), [0, 9, 10]])
    for steps in (4, 13):
        np.testing.assert_array_equal(place_digits(values, steps), digit_columns(values.astype(str), steps)[:, :, 0])


@pytest.mark.parametrize("name", ["add3", "terms", "add18"])
def test_column_codec_encodes_as_the_string_path(name):
    batch, codec = problems(name), ColumnCodec(Limits.of(TASKS[name]))
    columns = digit_columns(batch.text, terms=codec.limits.terms)
    steps = max(codec.train_steps, columns.shape[1] + 1)
    padded = np.pad(columns, ((0, 0), (0, steps - columns.shape[1]), (0, 0)))
    expected = np.eye(10)[padded].reshape(len(batch), steps, -1)
    x, y = codec.training_pair(batch.text, batch.answer)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, digit_columns(batch.answer.astype(str), codec.train_steps)[:, :, 0])
    assert x.dtype == np.float32 and y.dtype == np.uint8


@pytest.mark.parametrize("name", ["add3", "seed", "add18"])
def test_number_codec_reads_operands_as_float_parses_them(name):
    batch, codec = problems(name), NumberCodec(Limits.of(TASKS[name]))
    expected = np.array([t.split("+") for t in batch.text.tolist()], dtype=np.float32) / codec.scale
    np.testing.assert_array_equal(codec.encode_inputs(batch.text), expected)


def test_codes_refuse_characters_outside_the_alphabet():
    codec = CharCodec(Limits(terms=2, low=0, high=99))
    for text in ["1-2", "1\x002", "1" + chr(256 + ord("1")), "\u4e00"]:  # a code point past 255 is no ASCII character
        with pytest.raises(AdderError, match="outside the alphabet"):
            codec.encode_inputs([text])
    with pytest.raises(AdderError, match="longer than the model's 5 characters"):
        codec.encode_inputs(["100+99"])
