"""Model builders give the tutorial's shapes and parameter counts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.codec import CharCodec, Limits, NumberCodec  # noqa: E402
from pipeline.config import Experiment, load_params  # noqa: E402
from pipeline.models import build_model, make_codec  # noqa: E402

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def lstm_params(units: int, inputs: int) -> int:
    """Four gates, each with input weights, recurrent weights and a bias."""
    return 4 * (units * inputs + units * units + units)


def dense_params(units: int, inputs: int) -> int:
    return units * inputs + units


def built(name: str, **changes):
    exp = PARAMS.experiment(name).model_copy(update=changes)
    codec = make_codec(exp, Limits.of(PARAMS.task(exp.task)))
    return exp, codec, build_model(exp, codec)


def test_make_codec_by_model():
    assert isinstance(built("seed-seq2seq")[1], CharCodec)
    assert isinstance(built("mapping-naive_lstm")[1], NumberCodec)
    assert isinstance(built("mapping-naive_mlp")[1], NumberCodec)


def test_seq2seq_on_the_seed_task():
    _, _, model = built("seed-seq2seq")
    assert model.input_shape == (None, 5, 12)
    assert model.output_shape == (None, 2, 12)
    # LSTM(100) over 12 symbols, RepeatVector(2), LSTM(50), TimeDistributed(Dense(12))
    expected = lstm_params(100, 12) + lstm_params(50, 100) + dense_params(12, 50)
    assert expected == 45_200 + 30_200 + 612 == 76_012
    assert model.count_params() == expected
    assert [type(layer).__name__ for layer in model.layers] == ["LSTM", "RepeatVector", "LSTM", "TimeDistributed"]
    assert model.loss == "categorical_crossentropy"


def test_seq2seq_on_three_digits():
    _, _, model = built("seed-seq2seq", task="add3")  # the tutorial's model on 3-digit operands
    assert model.input_shape == (None, 7, 12)
    assert model.output_shape == (None, 4, 12)
    assert model.count_params() == 76_012  # widths change the sequence lengths, not the weights


def test_seq2seq_single_unit_count_shares_it():
    _, _, model = built("seed-seq2seq", units=(16,))
    assert model.count_params() == lstm_params(16, 12) + lstm_params(16, 16) + dense_params(12, 16)


def test_seq2seq_refuses_unit_counts_it_would_ignore():
    spec = {**PARAMS.experiment("seed-seq2seq").model_dump(), "units": (100, 77, 50)}
    with pytest.raises(ValueError, match="two numbers"):
        Experiment.model_validate(spec)


def test_naive_lstm_tutorial():
    _, _, model = built("mapping-naive_lstm")
    assert model.input_shape == (None, 2)
    assert model.output_shape == (None, 1)
    # Reshape to (2, 1), LSTM(10) over 1 feature, Dense(1)
    assert model.count_params() == lstm_params(10, 1) + dense_params(1, 10) == 480 + 11
    assert model.loss == "mean_squared_error"


def test_naive_lstm_stacked_like_the_tutorials_first_attempt():
    # model.add(LSTM(6, input_shape=(2, 1), return_sequences=True)); model.add(LSTM(6)); model.add(Dense(1))
    _, _, model = built("mapping-naive_lstm", units=(6, 6))
    assert model.output_shape == (None, 1)
    assert [layer.return_sequences for layer in model.layers if hasattr(layer, "return_sequences")] == [True, False]
    assert model.count_params() == lstm_params(6, 1) + lstm_params(6, 6) + dense_params(1, 6) == 511


def test_naive_mlp_tutorial():
    _, _, model = built("mapping-naive_mlp")
    assert model.input_shape == (None, 2)
    assert model.output_shape == (None, 1)
    assert [layer.units for layer in model.layers] == [4, 2, 1]
    # Dense(4, input_dim=2), Dense(2), Dense(1): all linear
    assert model.count_params() == dense_params(4, 2) + dense_params(2, 4) + dense_params(1, 2) == 25
    assert all(layer.activation.__name__ == "linear" for layer in model.layers)


def test_learning_rate_reaches_the_optimizer():
    _, _, model = built("mapping-naive_mlp", learning_rate=0.05)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)


def test_steps_per_execution_is_passed_on():
    exp = Experiment(task="t", model="naive_mlp", units=(3,), epochs=1, batch_size=1)
    model = build_model(exp, NumberCodec(Limits(3, 0, 9)), steps_per_execution=8)
    assert model.input_shape == (None, 3)
    assert model.steps_per_execution == 8
