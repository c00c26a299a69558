"""Training: tiny runs that finish in seconds, are deterministic, and draw fresh samples every epoch."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import without_clock  # noqa: E402

from pipeline.config import Experiment, Task  # noqa: E402
from pipeline.problems import split_problems  # noqa: E402
from pipeline.train import EpochBatches, by_width, draw_chances, epoch_indices, steps_per_execution, train  # noqa: E402

TASK = Task(terms=2, min_value=1, max_value=10, train_size=60, val_size=20, test_size=1)
SPLITS = split_problems(TASK, 0)
MLP = Experiment(task="tiny", model="naive_mlp", units=(4, 2), epochs=3, samples_per_epoch=20, batch_size=5)


@pytest.fixture(scope="module")
def mlp_runs():
    return [train(MLP, TASK, SPLITS["train"], SPLITS["val"], seed=3) for _ in range(2)]


def test_history_has_loss_and_validation_scores_per_epoch(mlp_runs):
    trained = mlp_runs[0]
    assert len(trained.history) == MLP.epochs
    for epoch in trained.history:
        assert set(epoch) == {"loss", "val_rmse", "val_exact_match", "seconds"}
        assert np.isfinite(epoch["loss"]) and epoch["loss"] >= 0
        assert 0.0 <= epoch["val_exact_match"] <= 1.0
        assert epoch["val_rmse"] >= 0
    seconds = [epoch["seconds"] for epoch in trained.history]
    assert seconds == sorted(seconds) and trained.train_seconds >= seconds[-1] - seconds[0]
    assert trained.model.input_shape == (None, 2)
    assert trained.codec.scale == 20.0


def test_same_seed_same_history(mlp_runs):
    first, second = mlp_runs
    assert without_clock(first.history) == without_clock(second.history)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_other_seed_other_history(mlp_runs):
    other = train(MLP.model_copy(update={"epochs": 1}), TASK, SPLITS["train"], SPLITS["val"], seed=4)
    assert other.history[0]["loss"] != mlp_runs[0].history[0]["loss"]


def test_seq2seq_history_has_character_scores():
    exp = Experiment(task="tiny", model="seq2seq", units=(8, 8), epochs=1, samples_per_epoch=10, batch_size=5)
    trained = train(exp, TASK, SPLITS["train"], SPLITS["val"], seed=0)
    assert set(trained.history[0]) == {"loss", "accuracy", "val_exact_match", "val_char_accuracy", "seconds"}
    assert 0.0 <= trained.history[0]["val_char_accuracy"] <= 1.0


def test_epoch_indices_fresh_samples_per_epoch():
    exp = MLP.model_copy(update={"epochs": 4, "samples_per_epoch": 50})
    indices = epoch_indices(1000, exp, np.random.default_rng(0))
    assert indices.shape == (4, 50)
    assert indices.min() >= 0 and indices.max() < 1000
    assert len({tuple(row) for row in indices}) == 4  # every epoch its own draw
    np.testing.assert_array_equal(indices, epoch_indices(1000, exp, np.random.default_rng(0)))


def test_epoch_indices_fill_the_last_batch():
    exp = MLP.model_copy(update={"epochs": 2, "samples_per_epoch": 50, "batch_size": 8})
    assert epoch_indices(1000, exp, np.random.default_rng(0)).shape == (2, 56)  # 7 whole batches, not 6 and 2 rows


def test_epoch_indices_sample_with_replacement():
    exp = MLP.model_copy(update={"epochs": 1, "samples_per_epoch": 200})
    indices = epoch_indices(10, exp, np.random.default_rng(0))
    assert set(indices[0]) == set(range(10))


def test_epoch_indices_full_pass_without_samples_per_epoch():
    exp = MLP.model_copy(update={"epochs": 3, "samples_per_epoch": None})
    indices = epoch_indices(30, exp, np.random.default_rng(0))
    assert indices.shape == (3, 30)
    for row in indices:
        assert sorted(row) == list(range(30))
    assert len({tuple(row) for row in indices}) == 3  # reshuffled every epoch


def test_oversampled_operations_are_drawn_as_often_as_their_weight_says():
    texts = ["1+2", "3*4", "5-6", "(1+2)*3", "7+8-9"]
    chances = draw_chances(texts, "+-*", {"*": 3, "+": 0.5})
    # A problem counts at its largest weight: "7+8-9" holds + (0.5) and - (1, not listed).
    np.testing.assert_allclose(chances, np.array([0.5, 3, 1, 3, 1]) / 8.5)
    assert draw_chances(texts, "+-*", {}) is None
    exp = MLP.model_copy(update={"epochs": 2, "samples_per_epoch": 85_000})
    counts = np.bincount(epoch_indices(5, exp, np.random.default_rng(0), chances).ravel(), minlength=5)
    np.testing.assert_allclose(counts / counts.sum(), chances, atol=0.005)


def test_epoch_batches_never_straddle_epochs():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.arange(10, dtype=np.float32) * 2
    indices = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    stream = EpochBatches(x, y, indices, batch_size=2)
    batches = [stream[i] for i in range(len(stream))]
    assert stream.steps == 3
    assert [bx.ravel().tolist() for bx, _ in batches] == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    for bx, by in batches:
        np.testing.assert_array_equal(by, bx.ravel() * 2)


def test_batches_of_similar_width_cut_to_their_widest_target():
    widths = np.array([3, 20, 5, 18, 4, 30, 2, 17])  # tokens up to each target's END
    y = np.arange(8 * 32).reshape(8, 32)
    x = (np.zeros((8, 5)), y + 1000)  # the expression, then the decoder's inputs
    indices = np.array([np.arange(8), np.arange(8)[::-1]])
    ordered = by_width(indices, widths, batch_size=4, rng=np.random.default_rng(0))
    for epoch, drawn in zip(ordered, indices):
        assert sorted(drawn) == sorted(epoch)  # the same draws, reordered
        assert {frozenset(epoch[:4]), frozenset(epoch[4:])} == {frozenset({0, 2, 4, 6}), frozenset({1, 3, 5, 7})}
    stream = EpochBatches(x, y, ordered, batch_size=4, widths=widths)
    for i in range(len(stream)):
        (_, previous), target = stream[i]
        assert target.shape[1] == (8 if widths[ordered.ravel()[i * 4]] < 8 else 32)
        np.testing.assert_array_equal(previous, target + 1000)
    same = np.full(8, 5)  # one width: the draws keep their order
    np.testing.assert_array_equal(by_width(indices, same, 4, np.random.default_rng(0)), indices)


@pytest.mark.parametrize(("steps", "expected"), [(1, 1), (10, 10), (100, 50), (127, 1), (128, 64), (1000, 50)])
def test_steps_per_execution(steps, expected):
    assert steps_per_execution(steps) == expected
