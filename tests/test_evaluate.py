"""Scores on hand-made predictions with known answers."""

import math

import numpy as np
import pytest

from pipeline.codec import CharCodec, Limits, NumberCodec
from pipeline.evaluate import char_accuracy, exact_match, predict_answers, rmse, score

SEED = Limits(terms=2, low=1, high=10)


def test_exact_match():
    assert exact_match(np.array(["13", "7", "20"]), np.array([13, 8, 20])) == pytest.approx(2 / 3)
    assert exact_match(np.array(["13"]), [13]) == 1.0
    assert exact_match(np.array(["31"]), [13]) == 0.0


def test_exact_match_compares_whole_strings():
    # '013' and '13 ' are not the answer 13
    assert exact_match(np.array(["013", "13 ", "1"]), np.array([13, 13, 13])) == 0.0


def test_char_accuracy_left_pads_both_sides():
    predicted = np.array(["13", "7", "3"])
    answers = np.array([13, 17, 12])
    # '13' vs '13': 2 right; ' 7' vs '17': 1 right; ' 3' vs '12': 0 right -> 3 of 6
    assert char_accuracy(predicted, answers, width=2) == 0.5


def test_char_accuracy_counts_padding():
    assert char_accuracy(np.array(["5", "9"]), np.array([5, 5]), width=3) == pytest.approx(5 / 6)
    assert char_accuracy(np.array(["5"]), np.array([5]), width=3) == 1.0


def test_char_accuracy_short_prediction_of_long_answer():
    # ' 0' vs '20': the units digit is right, the tens are not
    assert char_accuracy(np.array(["0"]), np.array([20]), width=2) == 0.5


def test_rmse():
    assert rmse(np.array(["10", "20"]), np.array([13, 16])) == pytest.approx(math.sqrt(12.5))
    assert rmse(np.array(["13", "7"]), np.array([13, 7])) == 0.0
    assert rmse(np.array(["-2"]), [2]) == 4.0


def test_score_by_codec():
    predicted, answers = np.array(["13", "9"]), np.array([13, 19])
    assert score(predicted, answers, NumberCodec(SEED)) == {"rmse": pytest.approx(math.sqrt(50)), "exact_match": 0.5}
    assert score(predicted, answers, CharCodec(SEED)) == {"exact_match": 0.5, "char_accuracy": 0.75}


class Oracle:
    """A stand-in model that answers every problem right."""

    def __init__(self, codec):
        self.codec = codec

    def predict_on_batch(self, x):
        if isinstance(self.codec, CharCodec):
            texts = ["".join(self.codec.alphabet[i] for i in row.argmax(-1)) for row in x]
            return self.codec.encode_targets([eval(t.strip()) for t in texts])
        return self.codec.encode_targets(x.sum(axis=1) * self.codec.scale)


@pytest.mark.parametrize("codec", [CharCodec(SEED), NumberCodec(SEED)])
def test_predict_answers_with_a_perfect_model(codec):
    texts = np.array(["3+10", "1+1", "10+10"])
    predicted = predict_answers(Oracle(codec), codec, texts)
    assert predicted.tolist() == ["13", "2", "20"]
    assert score(predicted, np.array([13, 2, 20]), codec)["exact_match"] == 1.0


def test_predict_answers_empty():
    assert predict_answers(None, CharCodec(SEED), []).shape == (0,)
