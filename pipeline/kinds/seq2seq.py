"""seq2seq: the tutorial's encoder-decoder, LSTM -> RepeatVector -> LSTM -> per-step softmax, over the
characters of a fixed-width expression (one-hot or integer codes, forwards or reversed, padded whole or
per term, masked or not)."""

from __future__ import annotations

from pipeline.codec import CharCodec, Limits

WORDS = "the tutorial's encoder-decoder LSTM"
LOSS = "categorical_crossentropy"


def codec(exp, limits: Limits, train=None) -> CharCodec:
    return CharCodec(limits, encoding=exp.encoding, reverse=exp.reverse, padding=exp.padding, mask=exp.mask)


def char_inputs(exp, codec: CharCodec) -> list:
    """The input layers for the codec's encoding: one-hot vectors, or integer codes into an Embedding;
    with mask, pad steps (all-zero vectors, or code 0) are skipped by the layers after."""
    import keras
    from keras import layers

    if codec.encoding == "integer":
        return [keras.Input((codec.in_width,), dtype="int32"),
                layers.Embedding(codec.n_symbols, exp.embedding_dim, mask_zero=codec.mask)]
    return [keras.Input((codec.in_width, codec.n_symbols)), *([layers.Masking(0.0)] if codec.mask else [])]


def build(exp, codec: CharCodec):
    import keras
    from keras import layers

    encoder, decoder = exp.units[0], exp.units[-1]
    return keras.Sequential(
        [
            *char_inputs(exp, codec),
            layers.LSTM(encoder),
            layers.RepeatVector(codec.out_width),
            layers.LSTM(decoder, return_sequences=True),
            layers.TimeDistributed(layers.Dense(codec.n_symbols, activation="softmax")),
        ],
        name="seq2seq",
    )
