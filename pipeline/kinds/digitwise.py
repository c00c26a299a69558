"""digitwise: one recurrent step per digit column, least significant first, emitting one answer digit per
step: the carry lives in the state, so the same weights add numbers of any length."""

from __future__ import annotations

from pipeline.codec import ColumnCodec, Limits

WORDS = "an LSTM over aligned digit columns"
LOSS = "sparse_categorical_crossentropy"


def codec(exp, limits: Limits, train=None) -> ColumnCodec:
    return ColumnCodec(limits)


def build(exp, codec: ColumnCodec):
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((None, codec.features))], name="digitwise")
    for units in exp.units:
        model.add(layers.LSTM(units, return_sequences=True))
    if exp.head_units:  # maps a column total of 3+ terms and the carry to its digit (a sum modulo 10)
        model.add(layers.Dense(exp.head_units, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model
