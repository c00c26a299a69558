"""transformer: a small encoder-decoder transformer (one block per entry of units, each entry the model
width), decoded greedily in one compiled graph that encodes the expression once and caches each token's
keys and values. Its layers are registered with Keras here, so a saved transformer loads once this
module is imported."""

from __future__ import annotations

import weakref

import keras
from keras import layers

from pipeline.codec import Limits, RewriteCodec, TokenCodec

WORDS = "an encoder-decoder transformer"
LOSS = "sparse_categorical_crossentropy"


def codec(exp, limits: Limits, train=None) -> TokenCodec:
    framing = RewriteCodec if exp.answer == "rewrite" else TokenCodec
    return framing.fitted(limits, exp.answer, train)


@keras.saving.register_keras_serializable(package="adder")
class PositionalEmbedding(layers.Layer):
    """Token embedding plus a learned embedding of each position. With `digits` (the codes of the digits
    0-9) it also embeds each digit's place in its number (0 for the first digit written, 1 for the next,
    ...; non-digits have none): with numbers written least significant digit first, digits of the same
    place value then look alike to attention wherever their numbers stand, which adding and multiplying
    need."""

    def __init__(self, vocabulary: int, length: int, dim: int, digits: tuple = (), **kwargs):
        super().__init__(**kwargs)
        self.vocabulary, self.length, self.dim, self.digits = vocabulary, length, dim, tuple(digits)
        self.tokens = layers.Embedding(vocabulary, dim)
        self.positions = layers.Embedding(length, dim)
        self.places = layers.Embedding(length + 1, dim) if self.digits else None

    def build(self, input_shape):
        # Built here, not on first call, so that a loaded model gets its weights before they are assigned.
        self.tokens.build(input_shape)
        self.positions.build((self.length,))
        if self.places is not None:
            self.places.build(input_shape)
        super().build(input_shape)

    def is_digit(self, codes):
        return keras.ops.any(keras.ops.expand_dims(codes, -1) == keras.ops.array(self.digits, "int32"), axis=-1)

    def place_codes(self, codes):
        """(batch, length): 1 + each digit's place in its run of digits, 0 for anything else."""
        digit = keras.ops.cast(self.is_digit(codes), "int32")
        run = keras.ops.cumsum(1 - digit, axis=-1)  # digits of one number share the count of non-digits before
        width = keras.ops.shape(codes)[-1]
        before = keras.ops.arange(width)[None, :] <= keras.ops.arange(width)[:, None]  # (i, j): j <= i
        same = (run[:, :, None] == run[:, None, :]) & before[None] & (digit[:, None, :] > 0)
        return keras.ops.sum(keras.ops.cast(same, "int32"), axis=-1) * digit

    def next_place(self, codes, place):
        """The place code of codes (batch, 1) written after a token of place code `place`."""
        return keras.ops.where(self.is_digit(codes), keras.ops.minimum(place + 1, self.length), 0)

    def call(self, codes):
        embedded = self.tokens(codes) + self.positions(keras.ops.arange(keras.ops.shape(codes)[-1]))
        return embedded if self.places is None else embedded + self.places(self.place_codes(codes))

    def at(self, codes, position, place=None):
        """The embedding of codes (batch, 1) all standing at one position (a scalar tensor), each digit at
        its place code (batch, 1)."""
        embedded = self.tokens(codes) + self.positions(keras.ops.reshape(position, (1,)))
        return embedded if self.places is None else embedded + self.places(place)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary": self.vocabulary, "length": self.length, "dim": self.dim,
                "digits": list(self.digits)}


@keras.saving.register_keras_serializable(package="adder")
class TransformerBlock(layers.Layer):
    """Self-attention (causal in a decoder block), cross-attention over the encoder's memory (decoder
    blocks), then a feed-forward layer; each added to its input and normalised. Given which of the
    expression's positions hold a character (`read`), attention over the expression skips its padding, so
    the padding's width changes nothing and training reads each batch no wider than its longest."""

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

    def call(self, x, memory=None, read=None):
        over_expression = None if read is None else read[:, None, :]
        x = self.own_norm(x + self.own(x, x, use_causal_mask=self.decoder,
                                       attention_mask=None if self.decoder else over_expression))
        if self.decoder:
            x = self.cross_norm(x + self.cross(x, memory, attention_mask=over_expression))
        return self.out_norm(x + self.out(self.hidden(x)))

    def step(self, x, position, cache: tuple, memory_keys_values: tuple, read=None):
        """call() for one position x (batch, 1, dim) of a decoder block, given the keys and values of every
        position (cache, each (batch, steps, heads, head size), those from `position` on unwritten) and of
        the memory; returns its output and the cache with this position's key and value written. Attending
        to the positions up to this one is the causal mask."""
        keys, values = (keras.ops.slice_update(c, (0, position, 0, 0), dense(x))
                        for c, dense in zip(cache, (self.own.key_dense, self.own.value_dense)))
        written = keras.ops.arange(keras.ops.shape(keys)[1]) <= position
        x = self.own_norm(x + attend(self.own, x, keys, values, written[None, None, None, :]))
        x = self.cross_norm(x + attend(self.cross, x, *memory_keys_values,
                                       None if read is None else read[:, None, None, :]))
        return self.out_norm(x + self.out(self.hidden(x))), (keys, values)

    def memory_keys_values(self, memory) -> tuple:
        return self.cross.key_dense(memory), self.cross.value_dense(memory)

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "decoder": self.decoder}


def attend(attention: layers.MultiHeadAttention, x, keys, values, mask=None):
    """What the attention layer gives for queries x over already projected keys and values."""
    heads = keras.ops.dot_product_attention(attention.query_dense(x), keys, values, mask=mask)
    return attention.output_dense(heads)


def build(exp, codec: TokenCodec) -> keras.Model:
    """A small encoder-decoder transformer: one block per entry of units (each entry the model width)."""
    dim, heads = exp.units[0], 4
    # A step model's expressions and rewrites are both full of numbers to line up digit by digit, and its
    # expressions, left-aligned, are read as wide as they are (padding skipped).
    rewrites = isinstance(codec, RewriteCodec)
    expression = keras.Input((None if rewrites else codec.in_width,), dtype="int32", name="expression")
    previous = keras.Input((None,), dtype="int32", name="previous_tokens")
    read = keras.ops.not_equal(expression, 0) if rewrites else None  # code 0: the padding
    memory = PositionalEmbedding(codec.n_symbols, codec.in_width, dim, codec.input_digits if rewrites else (),
                                 name="expression_embedding")(expression)
    for _ in exp.units:
        memory = TransformerBlock(dim, heads)(memory, read=read)
    x = PositionalEmbedding(codec.out_symbols, codec.out_steps, dim, tuple(range(10)) if rewrites else (),
                            name="answer_embedding")(previous)
    for _ in exp.units:
        x = TransformerBlock(dim, heads, decoder=True)(x, memory, read=read)
    output = layers.Dense(codec.out_symbols, activation="softmax", name="next_token")(x)
    return keras.Model([expression, previous], output, name="transformer")


# model -> {(steps, start): its decoder}, so that each keeps its compiled graph while the model lives
_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Answers of up to this many tokens are written by a graph with one copy of the step per token (fastest);
# longer ones by a loop over one copy, which compiles in seconds instead of minutes.
UNROLLED = 8


class CachedGreedy(keras.Model):
    """Writes `steps` tokens from START, each the argmax of the last; gives the probabilities of every
    step, as the model would over its own greedy output. Shares the model's layers and weights."""

    def __init__(self, model: keras.Model, steps: int, start: int):
        super().__init__()
        self.expression_embedding = model.get_layer("expression_embedding")
        self.answer_embedding = model.get_layer("answer_embedding")
        blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        self.encoder = [block for block in blocks if not block.decoder]
        self.decoder = [block for block in blocks if block.decoder]
        self.next_token = model.get_layer("next_token")
        self.steps, self.start = steps, start
        self.skips_padding = model.inputs[0].shape[1] is None  # a step model's: read as wide as the expression
        self.built = True  # its layers are the trained model's: built; Keras would otherwise build it by an eager run

    def call(self, expression):
        read = keras.ops.not_equal(expression, 0) if self.skips_padding else None
        memory = self.expression_embedding(expression)
        for block in self.encoder:
            memory = block(memory, read=read)
        memories = [block.memory_keys_values(memory) for block in self.decoder]
        batch = keras.ops.shape(expression)[0]

        def write(position, state):
            token, place, caches, outputs = state
            if self.answer_embedding.places is not None:
                place = self.answer_embedding.next_place(token, place)
            x = self.answer_embedding.at(token, position, place)
            written = []
            for block, cache, memory_keys_values in zip(self.decoder, caches, memories):
                x, cache = block.step(x, position, cache, memory_keys_values, read)
                written.append(cache)
            probabilities = self.next_token(x)
            outputs = keras.ops.slice_update(outputs, (0, position, 0), probabilities)
            return keras.ops.cast(keras.ops.argmax(probabilities, axis=-1), "int32"), place, written, outputs

        caches = [tuple(keras.ops.zeros((batch, self.steps, block.heads, block.dim // block.heads)) for _ in "kv")
                  for block in self.decoder]
        start = keras.ops.zeros_like(expression[:, :1]) + self.start
        outputs = keras.ops.zeros((batch, self.steps, self.next_token.units))
        state = (start, keras.ops.zeros_like(start), caches, outputs)
        if self.steps > UNROLLED:
            return keras.ops.fori_loop(0, self.steps, write, state)[3]
        for position in range(self.steps):
            state = write(position, state)
        return state[3]


def greedy(model, codec: TokenCodec) -> CachedGreedy:
    """The cached greedy decoder of a transformer that build() made, kept while the model lives."""
    steps, start = codec.out_steps, codec.START
    decoders = _decoders.setdefault(model, {})
    if (steps, start) not in decoders:
        decoders[steps, start] = CachedGreedy(model, steps, start)
    return decoders[steps, start]
