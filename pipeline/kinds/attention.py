"""attention: a true encoder-decoder. The encoder's final state starts the decoder, which reads its own
previous answer token (teacher forcing in training) and attends over every encoder output (Luong
attention); decoded greedily by passes (pipeline.decoding)."""

from __future__ import annotations

from pipeline.codec import Limits, TokenCodec

WORDS = "an LSTM encoder-decoder with attention"
LOSS = "sparse_categorical_crossentropy"


def codec(exp, limits: Limits, train=None) -> TokenCodec:
    return TokenCodec.fitted(limits, exp.answer, train)


def build(exp, codec: TokenCodec):
    import keras
    from keras import layers

    units = exp.units[0]
    expression = keras.Input((codec.in_width,), dtype="int32", name="expression")
    previous = keras.Input((None,), dtype="int32", name="previous_tokens")
    encoded, *state = layers.LSTM(units, return_sequences=True, return_state=True)(
        layers.Embedding(codec.n_symbols, exp.embedding_dim)(expression))
    decoded = layers.LSTM(units, return_sequences=True)(
        layers.Embedding(codec.out_symbols, exp.embedding_dim)(previous), initial_state=state)
    context = layers.Attention()([decoded, encoded])
    output = layers.Dense(codec.out_symbols, activation="softmax")(layers.Concatenate()([decoded, context]))
    return keras.Model([expression, previous], output, name="attention")
