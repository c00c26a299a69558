"""Model builders by name. Each takes the experiment and its codec and returns a compiled Keras model."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.codec import CharCodec, Codec, ColumnCodec, Limits, NumberCodec, TokenCodec
from pipeline.config import Experiment
from pipeline.problems import Problems


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


def char_inputs(exp: Experiment, codec: CharCodec) -> list:
    """The input layers for the codec's encoding: one-hot vectors, or integer codes into an Embedding;
    with mask, pad steps (all-zero vectors, or code 0) are skipped by the layers after."""
    if codec.encoding == "integer":
        return [keras.Input((codec.in_width,), dtype="int32"),
                layers.Embedding(codec.n_symbols, exp.embedding_dim, mask_zero=codec.mask)]
    return [keras.Input((codec.in_width, codec.n_symbols)), *([layers.Masking(0.0)] if codec.mask else [])]


def seq2seq(exp: Experiment, codec: CharCodec) -> keras.Model:
    """The tutorial's encoder-decoder: LSTM -> RepeatVector -> LSTM -> per-step softmax."""
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


def digitwise(exp: Experiment, codec: ColumnCodec) -> keras.Model:
    """One recurrent step per digit column, least significant first, emitting one answer digit
    per step: the carry lives in the state, so the same weights add numbers of any length."""
    model = keras.Sequential([keras.Input((None, codec.features))], name="digitwise")
    for units in exp.units:
        model.add(layers.LSTM(units, return_sequences=True))
    if exp.head_units:  # maps a column total of 3+ terms and the carry to its digit (a sum modulo 10)
        model.add(layers.Dense(exp.head_units, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def attention(exp: Experiment, codec: TokenCodec) -> keras.Model:
    """A true encoder-decoder: the encoder's final state starts the decoder, which reads its own previous
    answer token (teacher forcing in training) and attends over every encoder output (Luong attention)."""
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


@keras.saving.register_keras_serializable(package="adder")
class PositionalEmbedding(layers.Layer):
    """Token embedding plus a learned embedding of each position."""

    def __init__(self, vocabulary: int, length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary, self.length, self.dim = vocabulary, length, dim
        self.tokens = layers.Embedding(vocabulary, dim)
        self.positions = layers.Embedding(length, dim)

    def build(self, input_shape):
        # Built here, not on first call, so that a loaded model gets its weights before they are assigned.
        self.tokens.build(input_shape)
        self.positions.build((self.length,))
        super().build(input_shape)

    def call(self, codes):
        return self.tokens(codes) + self.positions(keras.ops.arange(keras.ops.shape(codes)[-1]))

    def at(self, codes, position):
        """The embedding of codes (batch, 1) all standing at one position (a scalar tensor)."""
        return self.tokens(codes) + self.positions(keras.ops.reshape(position, (1,)))

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary": self.vocabulary, "length": self.length, "dim": self.dim}


@keras.saving.register_keras_serializable(package="adder")
class TransformerBlock(layers.Layer):
    """Self-attention (causal in a decoder block), cross-attention over the encoder's memory (decoder
    blocks), then a feed-forward layer; each added to its input and normalised."""

    def __init__(self, dim: int, heads: int, decoder: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.decoder = dim, heads, decoder
        self.own = layers.MultiHeadAttention(heads, dim // heads)
        self.own_norm = layers.LayerNormalization()
        if decoder:
            self.cross = layers.MultiHeadAttention(heads, dim // heads)
            self.cross_norm = layers.LayerNormalization()
        self.hidden = layers.Dense(4 * dim, activation="relu")
        self.out = layers.Dense(dim)
        self.out_norm = layers.LayerNormalization()

    def build(self, x_shape, memory_shape=None):
        self.own.build(x_shape, x_shape)
        self.own_norm.build(x_shape)
        if self.decoder:
            self.cross.build(x_shape, memory_shape)
            self.cross_norm.build(x_shape)
        self.hidden.build(x_shape)
        self.out.build((*x_shape[:-1], 4 * self.dim))
        self.out_norm.build(x_shape)
        super().build(x_shape)

    def call(self, x, memory=None):
        x = self.own_norm(x + self.own(x, x, use_causal_mask=self.decoder))
        if self.decoder:
            x = self.cross_norm(x + self.cross(x, memory))
        return self.out_norm(x + self.out(self.hidden(x)))

    def step(self, x, position, cache: tuple, memory_keys_values: tuple):
        """call() for one position x (batch, 1, dim) of a decoder block, given the keys and values of every
        position (cache, each (batch, steps, heads, head size), those from `position` on unwritten) and of
        the memory; returns its output and the cache with this position's key and value written. Attending
        to the positions up to this one is the causal mask."""
        keys, values = (keras.ops.slice_update(c, (0, position, 0, 0), dense(x))
                        for c, dense in zip(cache, (self.own.key_dense, self.own.value_dense)))
        written = keras.ops.arange(keras.ops.shape(keys)[1]) <= position
        x = self.own_norm(x + attend(self.own, x, keys, values, written[None, None, None, :]))
        x = self.cross_norm(x + attend(self.cross, x, *memory_keys_values))
        return self.out_norm(x + self.out(self.hidden(x))), (keys, values)

    def memory_keys_values(self, memory) -> tuple:
        return self.cross.key_dense(memory), self.cross.value_dense(memory)

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "decoder": self.decoder}


def attend(attention: layers.MultiHeadAttention, x, keys, values, mask=None):
    """What the attention layer gives for queries x over already projected keys and values."""
    heads = keras.ops.dot_product_attention(attention.query_dense(x), keys, values, mask=mask)
    return attention.output_dense(heads)


def transformer(exp: Experiment, codec: TokenCodec) -> keras.Model:
    """A small encoder-decoder transformer: one block per entry of units (each entry the model width)."""
    dim, heads = exp.units[0], 4
    expression = keras.Input((codec.in_width,), dtype="int32", name="expression")
    previous = keras.Input((None,), dtype="int32", name="previous_tokens")
    memory = PositionalEmbedding(codec.n_symbols, codec.in_width, dim, name="expression_embedding")(expression)
    for _ in exp.units:
        memory = TransformerBlock(dim, heads)(memory)
    x = PositionalEmbedding(codec.out_symbols, codec.out_steps, dim, name="answer_embedding")(previous)
    for _ in exp.units:
        x = TransformerBlock(dim, heads, decoder=True)(x, memory)
    output = layers.Dense(codec.out_symbols, activation="softmax", name="next_token")(x)
    return keras.Model([expression, previous], output, name="transformer")


BUILDERS = {"naive_lstm": naive_lstm, "naive_mlp": naive_mlp, "seq2seq": seq2seq, "digitwise": digitwise,
            "attention": attention, "transformer": transformer}
CODEC_OF = {"naive_lstm": NumberCodec, "naive_mlp": NumberCodec, "seq2seq": CharCodec, "digitwise": ColumnCodec,
            "attention": TokenCodec, "transformer": TokenCodec}
LOSS_OF = {"naive_lstm": "mean_squared_error", "naive_mlp": "mean_squared_error",
           "seq2seq": "categorical_crossentropy", "digitwise": "sparse_categorical_crossentropy",
           "attention": "sparse_categorical_crossentropy", "transformer": "sparse_categorical_crossentropy"}


def make_codec(exp: Experiment, limits: Limits, train: Problems | None = None) -> Codec:
    """The experiment's codec; a decoder writing worked steps gets room for the longest in train."""
    if CODEC_OF[exp.model] is CharCodec:
        return CharCodec(limits, encoding=exp.encoding, reverse=exp.reverse, padding=exp.padding, mask=exp.mask)
    if CODEC_OF[exp.model] is TokenCodec:
        codec = TokenCodec(limits, answer=exp.answer or "reversed")
        return codec if train is None else codec.sized_for(train.answer, train.steps)
    return CODEC_OF[exp.model](limits)


def learning_rate(exp: Experiment, total_steps: int):
    """The rate, constant or decayed to zero along a cosine over the planned steps; with warmup_epochs it
    first climbs linearly from a tenth of itself, so a high rate does not throw the first steps off."""
    rate, warmup = exp.learning_rate, total_steps * exp.warmup_epochs // exp.epochs
    if not warmup:
        return rate if exp.schedule == "constant" else keras.optimizers.schedules.CosineDecay(rate, total_steps)
    return keras.optimizers.schedules.CosineDecay(rate / 10, total_steps - warmup, warmup_target=rate, warmup_steps=warmup,
                                                   alpha=1.0 if exp.schedule == "constant" else 0.0)


def build_model(exp: Experiment, codec: Codec, total_steps: int = 1, steps_per_execution: int = 1) -> keras.Model:
    model = BUILDERS[exp.model](exp, codec)
    metrics = ["accuracy"] if exp.is_sequence else []
    model.compile(keras.optimizers.Adam(learning_rate(exp, total_steps)), getattr(codec, "loss", LOSS_OF[exp.model]), metrics=metrics, steps_per_execution=steps_per_execution)
    return model
