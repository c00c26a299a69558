"""naive_lstm: the tutorial's mapping LSTM, operands as a sequence of scalars -> the scaled sum."""

from __future__ import annotations

from pipeline.codec import Limits, NumberCodec

WORDS = "the tutorial's LSTM regressing the scaled sum"
LOSS = "mean_squared_error"


def codec(exp, limits: Limits, train=None) -> NumberCodec:
    return NumberCodec(limits)


def build(exp, codec: NumberCodec):
    import keras
    from keras import layers

    terms = codec.limits.terms
    model = keras.Sequential([keras.Input((terms,)), layers.Reshape((terms, 1))], name="naive_lstm")
    for i, units in enumerate(exp.units):
        model.add(layers.LSTM(units, return_sequences=i < len(exp.units) - 1))
    model.add(layers.Dense(1))
    return model
