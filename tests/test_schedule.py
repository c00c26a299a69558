"""The learning-rate schedule: warm-up, then constant or cosine, read off Keras's schedule step by step."""

import keras
import pytest

from pipeline.config import Experiment
from pipeline.models import learning_rate


def rates(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def experiment(**settings) -> Experiment:
    return Experiment(task="ops", model="transformer", units=(64,), epochs=10, batch_size=64, learning_rate=0.01,
                      **settings)


def test_without_warmup_the_rate_is_the_plain_schedule():
    assert learning_rate(experiment(), 100) == 0.01
    assert rates(learning_rate(experiment(schedule="cosine"), 100), [0, 50, 100]) == pytest.approx([0.01, 0.005, 0])


def test_warmup_climbs_from_a_tenth_then_follows_the_schedule():
    cosine = learning_rate(experiment(schedule="cosine", warmup_epochs=2), 100)  # 20 warm-up steps, 80 of decay
    assert rates(cosine, [0, 10, 20, 60, 100]) == pytest.approx([0.001, 0.0055, 0.01, 0.005, 0], abs=1e-9)
    constant = learning_rate(experiment(warmup_epochs=2), 100)
    assert rates(constant, [0, 20, 60, 100]) == pytest.approx([0.001, 0.01, 0.01, 0.01])
