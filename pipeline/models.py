"""Building an experiment's model: its kind's codec and builder (pipeline.kinds), compiled with its kind's
loss, Adam and the learning-rate schedule every kind shares."""

from __future__ import annotations

import keras

from pipeline.codec import Codec, Limits
from pipeline.config import Experiment
from pipeline.kinds import kind
from pipeline.problems import Problems


def make_codec(exp: Experiment, limits: Limits, train: Problems | None = None) -> Codec:
    """The experiment's codec; a decoder writing worked steps gets room for the longest in train."""
    return kind(exp.model).codec(exp, limits, train)


def learning_rate(exp: Experiment, total_steps: int):
    """The rate, constant or decayed to zero along a cosine over the planned steps; with warmup_epochs it
    first climbs linearly from a tenth of itself, so a high rate does not throw the first steps off."""
    rate, warmup = exp.learning_rate, total_steps * exp.warmup_epochs // exp.epochs
    if not warmup:
        return rate if exp.schedule == "constant" else keras.optimizers.schedules.CosineDecay(rate, total_steps)
    return keras.optimizers.schedules.CosineDecay(rate / 10, total_steps - warmup, warmup_target=rate,
                                                   warmup_steps=warmup,
                                                   alpha=1.0 if exp.schedule == "constant" else 0.0)


def build_model(exp: Experiment, codec: Codec, total_steps: int = 1, steps_per_execution: int = 1) -> keras.Model:
    model = kind(exp.model).build(exp, codec)
    loss = getattr(codec, "loss", kind(exp.model).LOSS)  # a codec may weigh its own targets
    model.compile(keras.optimizers.Adam(learning_rate(exp, total_steps)), loss,
                  metrics=["accuracy"] if exp.is_sequence else [], steps_per_execution=steps_per_execution)
    return model
