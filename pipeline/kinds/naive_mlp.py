"""naive_mlp: the tutorial's "beginner's mistake" solved, a stack of linear Dense layers that learns the
sum exactly."""

from __future__ import annotations

from pipeline.codec import Limits, NumberCodec

WORDS = "an MLP regressing the scaled sum"
LOSS = "mean_squared_error"


def codec(exp, limits: Limits, train=None) -> NumberCodec:
    return NumberCodec(limits)


def build(exp, codec: NumberCodec):
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((codec.limits.terms,))], name="naive_mlp")
    for units in exp.units:
        model.add(layers.Dense(units))
    model.add(layers.Dense(1))
    return model
