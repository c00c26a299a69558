"""Model builders by name. Each takes the experiment and its codec and returns a compiled Keras model."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.codec import CharCodec, Codec, NumberCodec, Limits
from pipeline.config import Experiment


def naive_lstm(exp: Experiment, codec: NumberCodec) -> keras.Model:
    """The tutorial's mapping LSTM: operands as a sequence of scalars -> the scaled sum."""
    terms = codec.limits.terms
    model = keras.Sequential([keras.Input((terms,)), layers.Reshape((terms, 1))], name="naive_lstm")
    for i, units in enumerate(exp.units):
        model.add(layers.LSTM(units, return_sequences=i < len(exp.units) - 1))
    model.add(layers.Dense(1))
    return model


def naive_mlp(exp: Experiment, codec: NumberCodec) -> keras.Model:
    """The tutorial's MLP: a stack of linear Dense layers; it learns the sum exactly."""
    model = keras.Sequential([keras.Input((codec.limits.terms,))], name="naive_mlp")
    for units in exp.units:
        model.add(layers.Dense(units))
    model.add(layers.Dense(1))
    return model


def seq2seq(exp: Experiment, codec: CharCodec) -> keras.Model:
    """The tutorial's encoder-decoder: LSTM -> RepeatVector -> LSTM -> per-step softmax."""
    encoder, decoder = exp.units[0], exp.units[-1]
    return keras.Sequential(
        [
            keras.Input((codec.in_width, codec.n_symbols)),
            layers.LSTM(encoder),
            layers.RepeatVector(codec.out_width),
            layers.LSTM(decoder, return_sequences=True),
            layers.TimeDistributed(layers.Dense(codec.n_symbols, activation="softmax")),
        ],
        name="seq2seq",
    )


BUILDERS = {"naive_lstm": naive_lstm, "naive_mlp": naive_mlp, "seq2seq": seq2seq}
CODEC_OF = {"naive_lstm": NumberCodec, "naive_mlp": NumberCodec, "seq2seq": CharCodec}


def make_codec(exp: Experiment, limits: Limits) -> Codec:
    return CODEC_OF[exp.model](limits)


def build_model(exp: Experiment, codec: Codec, steps_per_execution: int = 1) -> keras.Model:
    model = BUILDERS[exp.model](exp, codec)
    optimizer = keras.optimizers.Adam(exp.learning_rate)
    if exp.is_sequence:
        model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"], steps_per_execution=steps_per_execution)
    else:
        model.compile(optimizer, "mean_squared_error", steps_per_execution=steps_per_execution)
    return model
