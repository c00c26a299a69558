"""Text <-> arrays, checked against the tutorial's worked example."""

import numpy as np
import pytest

from pipeline.codec import CharCodec, Limits, NumberCodec, load_codec, save_codec
from pipeline.config import Task
from pipeline.errors import AdderError

SEED = Limits(terms=2, low=1, high=10)  # the tutorial's seq2seq task: 2 numbers in 1..10
MAPPING = Limits(terms=2, low=1, high=100)  # the tutorial's mapping task: 2 numbers in 1..100

# Printed by the tutorial for [[3, 10]] -> [13]
TUTORIAL_X = [[[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
               [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]]
TUTORIAL_Y = [[[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]]]


def test_alphabet():
    # The tutorial's: codes 0-9 are the digits, then '+' and the pad space.
    assert CharCodec(SEED).alphabet == "0123456789+ "
    assert CharCodec(SEED).n_symbols == 12


def test_tutorial_widths():
    codec = CharCodec(SEED)
    assert (codec.in_width, codec.out_width) == (5, 2)
    keras = CharCodec(Limits(terms=2, low=0, high=999))  # Keras addition_rnn, DIGITS = 3
    assert (keras.in_width, keras.out_width) == (7, 4)


def test_limits_of_task():
    task = Task(terms=3, digits=2, train_size=1, val_size=1, test_size=1)
    assert Limits.of(task) == Limits(3, 0, 99)
    assert Limits.of(task).max_answer == 297


def test_tutorial_padding_and_integer_codes():
    codec = CharCodec(SEED)
    assert codec.pad(["3+10"], codec.in_width).tolist() == [" 3+10"]
    assert codec.to_codes(["3+10"], codec.in_width).tolist() == [[11, 3, 10, 1, 0]]
    assert codec.pad(["13"], codec.out_width).tolist() == ["13"]
    assert codec.to_codes(["13"], codec.out_width).tolist() == [[1, 3]]


def test_tutorial_one_hot():
    codec = CharCodec(SEED)
    x, y = codec.encode_inputs(["3+10"]), codec.encode_targets([13])
    assert x.shape == (1, 5, 12) and y.shape == (1, 2, 12)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, TUTORIAL_X)
    np.testing.assert_array_equal(y, TUTORIAL_Y)


def test_short_answers_are_left_padded():
    codec = CharCodec(SEED)
    assert codec.to_codes(["2"], codec.out_width).tolist() == [[11, 2]]
    np.testing.assert_array_equal(codec.encode_targets(np.array([2]))[0, 0], np.eye(12)[11])


def test_characters_outside_the_alphabet():
    codec = CharCodec(SEED)
    with pytest.raises(AdderError, match="outside the alphabet"):
        codec.to_codes(["3-1"], codec.in_width)


def test_too_wide_strings_refused():
    codec = CharCodec(SEED)
    with pytest.raises(AdderError):
        codec.to_codes(["0010+10"], codec.in_width)


@pytest.mark.parametrize("limits", [SEED, Limits(terms=3, low=0, high=999)])
def test_decode_inverts_encode_targets(limits):
    codec = CharCodec(limits)
    answers = np.array([0, 2, 13, 20, limits.max_answer])
    assert codec.decode(codec.encode_targets(answers)).tolist() == answers.astype(str).tolist()


def test_decode_takes_argmax_per_step():
    codec = CharCodec(SEED)
    scores = np.full((2, 2, 12), 0.01)
    scores[0, 0, 1], scores[0, 1, 7] = 0.9, 0.5  # '17'
    scores[1, 0, 11], scores[1, 1, 4] = 0.6, 0.4  # ' 4'
    assert codec.decode(scores).tolist() == ["17", "4"]


def test_number_codec_scales_by_terms_times_largest():
    codec = NumberCodec(MAPPING)
    assert codec.scale == 200.0  # the tutorial's float(largest * n_numbers)
    np.testing.assert_allclose(codec.encode_inputs(["3+10", "100+100"]), [[0.015, 0.05], [0.5, 0.5]])
    np.testing.assert_allclose(codec.encode_targets([13, 200]), [0.065, 1.0])
    assert codec.encode_inputs(["3+10"]).dtype == np.float32


def test_number_codec_decode_rounds():
    codec = NumberCodec(MAPPING)
    outputs = np.array([[13.4], [13.6], [0.2], [199.7]]) / 200
    assert codec.decode(outputs).tolist() == ["13", "14", "0", "200"]
    targets = codec.encode_targets(np.arange(2, 201))
    assert codec.decode(targets).tolist() == [str(v) for v in range(2, 201)]


@pytest.mark.parametrize(("expression", "compact"), [
    ("12+50", "12+50"), (" 12 + 50 ", "12+50"), ("1+100", "1+100"), ("100+1\n", "100+1"), ("\t7+7", "7+7"),
])
def test_check_accepts(expression, compact):
    assert MAPPING.check(expression) == compact


@pytest.mark.parametrize(("expression", "message"), [
    ("12+ab", "malformed expression '12\\+ab'"),
    ("twelve", "malformed"),
    ("12-50", "malformed"),
    ("12++50", "malformed"),
    ("+12", "malformed"),
    ("1.5+2", "malformed"),
    ("\u0661\u0662+5", "malformed"),  # Arabic-Indic digits are not ASCII
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("12", "has 1 terms; this model was trained on 2"),
    ("1+2+3", "has 3 terms; this model was trained on 2"),
    ("0+5", "operands must be in 1..100"),
    ("101+5", "operands must be in 1..100"),
])
def test_check_rejects(expression, message):
    with pytest.raises(AdderError, match=message) as e:
        MAPPING.check(expression)
    assert "\n" not in str(e.value)


def test_check_rejects_a_million_characters_in_one_line():
    with pytest.raises(AdderError, match="expression of 1,000,000 characters is too long") as e:
        MAPPING.check("1" * 999_998 + "+1")
    assert "\n" not in str(e.value)
    assert len(str(e.value)) < 200


def test_check_normalises_leading_zeros():
    assert SEED.check("010+5") == "10+5"


def test_check_rejects_spaces_inside_a_number():
    with pytest.raises(AdderError, match="malformed"):
        MAPPING.check("1 2+5")


@pytest.mark.parametrize("codec", [CharCodec(SEED), NumberCodec(MAPPING), CharCodec(Limits(5, 0, 10**6))])
def test_save_load_round_trip(tmp_path, codec):
    path = tmp_path / "codec.json"
    save_codec(codec, path)
    back = load_codec(path)
    assert back == codec and type(back) is type(codec)
    assert back.limits.check("1+2" if codec.limits.terms == 2 else "1+2+3+4+5")


def test_load_codec_missing(tmp_path):
    with pytest.raises(AdderError, match="no codec at .*trained model folder"):
        load_codec(tmp_path / "codec.json")
