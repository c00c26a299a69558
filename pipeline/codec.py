"""Text <-> arrays. One codec object serves training, evaluation and prediction,
so the same string always becomes the same tensor."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline import digits
from pipeline.digits import number_widths
from pipeline.errors import AdderError
from pipeline.expressions import MAX_EXPRESSION_CHARS, Limits  # noqa: F401 (Limits lived here first)

OPERAND = re.compile(r"[0-9]+")


PREDICT_BATCH = 4096


def run_batches(model, x) -> np.ndarray:
    """model outputs for x (an array or a list of arrays), PREDICT_BATCH rows per call.
    predict_on_batch skips model.predict's per-call set-up, which costs ~0.25 s even for 100 rows."""
    inputs = x if isinstance(x, list) else [x]
    chunks = [model.predict_on_batch([a[i : i + PREDICT_BATCH] for a in inputs] if len(inputs) > 1 else inputs[0][i : i + PREDICT_BATCH])
              for i in range(0, len(inputs[0]), PREDICT_BATCH)]
    return np.concatenate([np.asarray(c) for c in chunks])


class Checked:
    """What every codec does: refuse expressions its model was not trained for, pair inputs with
    targets for training, and run the model to get outputs for decode()."""

    limits: Limits

    def check(self, expression: str) -> str:
        return self.limits.check(expression)

    def training_pair(self, texts, answers) -> tuple:
        return self.encode_inputs(texts), self.encode_targets(answers)

    def infer(self, model, x) -> np.ndarray:
        return run_batches(model, x)


# Text as character matrices: a numpy str array is an (n, width) block of uint32 code points, zero past
# each string's end, so a whole batch is encoded with array operations and numpy's C string functions,
# without per-string Python work. The functions below take and keep that layout.


def char_matrix(texts) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> ((n, width) uint32 code points, (n,) lengths), a view of the numpy str array's memory."""
    texts = np.ascontiguousarray(np.asarray(texts, dtype=str))
    return texts.view(np.uint32).reshape(len(texts), texts.itemsize // 4), np.strings.str_len(texts)


def right_aligned(chars: np.ndarray, lengths: np.ndarray, width: int, reverse: bool = False) -> np.ndarray:
    """(n, width) code points of each string (no longer than width) left-padded with spaces; reverse: the
    string read backwards, the padding still in front."""
    n, have = chars.shape
    if reverse:
        backwards = np.zeros((n, width), dtype=chars.dtype)
        backwards[:, : min(have, width)] = chars[:, :width]
        return np.where(np.arange(width) < width - lengths[:, None], ord(" "), backwards[:, ::-1])
    if n == 0:
        return np.zeros((0, width), dtype=chars.dtype)  # np.strings.rjust fails on no strings
    return np.strings.rjust(chars.view(f"U{have}")[:, 0], width).view(chars.dtype).reshape(n, width)


def pad_operands(chars: np.ndarray, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every run of digits left-padded with spaces to `width` ('3*10' -> ' 3*10' for width 2): each
    character moves right by the spaces inserted before it, counted over the flattened matrix."""
    n, have = chars.shape
    digit = (chars >= ord("0")) & (chars <= ord("9")) & (np.arange(have) < lengths[:, None])
    first = digit.copy()
    first[:, 1:] &= ~digit[:, :-1]
    run = np.cumsum(first).reshape(n, have)  # the latest operand begun, numbered over the whole matrix
    size = np.bincount(run[digit], minlength=1)  # size[0] = 0: no operand yet
    inserted = np.cumsum(np.maximum(width - size, 0) * (size > 0))  # spaces up to each operand
    shift = inserted[run] - inserted[run[:, 0] - first[:, 0]][:, None]  # spaces before each character in its row
    out = np.full((n, have + int(shift[:, -1].max(initial=0))), ord(" "), dtype=chars.dtype)
    out.reshape(-1)[np.arange(n)[:, None] * out.shape[1] + np.arange(have) + shift] = chars
    lengths = lengths + shift[:, -1]
    return np.where(np.arange(out.shape[1]) < lengths[:, None], out, 0), lengths  # zero past each end


def number_chars(values: np.ndarray, width: int) -> np.ndarray:
    """Integers -> (n, width) code points right-aligned with spaces in front, '-' before negatives:
    np.char.rjust(values.astype(str), width) without formatting each number."""
    values = values.astype(np.int64)
    magnitude, negative = np.abs(values), values < 0
    if magnitude.max(initial=0) < 2**31:
        magnitude = magnitude.astype(np.int32)  # 32-bit division is several times faster
    length = number_widths(magnitude)
    if (length + negative).max(initial=0) > width:
        raise AdderError(f"strings longer than the model's {width} characters")
    chars = np.empty((width, len(values)), dtype=np.uint32)  # a row per place, the last first
    rest = magnitude
    for place in range(width):
        pad = np.where(negative & (place == length), ord("-"), ord(" ")) if negative.any() else ord(" ")
        chars[width - 1 - place] = np.where(place < length, rest % 10 + ord("0"), pad)
        rest = rest // 10
    return chars.T


def row_cumsum(values: np.ndarray) -> np.ndarray:
    """Inclusive running sum along each row, from one flat cumsum (numpy's cumsum along many short rows is slow)."""
    total = np.cumsum(values.reshape(-1)).reshape(values.shape)
    return total - (total[:, :1] - values[:, :1])


def operand_digits(chars: np.ndarray, lengths: np.ndarray, terms: int) -> np.ndarray:
    """'123+45' -> (n, width, terms) uint8 digits, column k holding digit k (from the right) of each
    operand, zeros for missing operands: digits.digit_columns' layout, without splitting strings."""
    n, have = chars.shape
    inside = np.arange(have) < lengths[:, None]
    plus = inside & (chars == ord("+"))
    digit = inside & (chars >= ord("0")) & (chars <= ord("9"))
    if (inside & ~plus & ~digit).any():
        raise AdderError("expected numbers joined by '+'")
    operand = row_cumsum(plus)  # which operand each character belongs to
    if operand.max(initial=0) >= terms:
        raise AdderError(f"more than {terms} numbers joined by '+'")
    row = np.arange(n)[:, None]
    count = np.bincount(np.where(digit, row * terms + operand, n * terms).reshape(-1), minlength=n * terms + 1)
    # A digit's place: how many digits follow it in its operand (those up to its operand's end, minus those up to it).
    through = row_cumsum(count[:-1].reshape(n, terms))
    place = through.reshape(-1)[row * terms + operand] - row_cumsum(digit)
    width = max(int(count[:-1].max(initial=0)), 1)
    out = np.zeros(n * width * terms + 1, dtype=np.uint8)  # the last element takes every non-digit
    out[np.where(digit, (row * width + place) * terms + operand, len(out) - 1)] = chars - ord("0")
    return out[:-1].reshape(n, width, terms)


def place_digits(values: np.ndarray, steps: int) -> np.ndarray:
    """Non-negative integers -> (n, steps) uint8 digits, least significant first; more steps for longer ones."""
    rest, places = values.astype(np.int64), []
    while len(places) < steps or rest.any():
        places.append((rest % 10).astype(np.uint8))
        rest = rest // 10
    return np.stack(places, axis=1) if places else np.zeros((len(values), 0), dtype=np.uint8)


@dataclass(frozen=True)
class CharCodec(Checked):
    """Expression characters in, answer characters out. The defaults are the tutorial's encoding: one-hot
    vectors of the whole string left-padded with spaces ([3, 10] -> ' 3+10' -> [11, 3, 10, 1, 0]).

    encoding "integer": input codes for an Embedding, shifted so the pad space is 0 (mask_zero can skip it),
    and answers as integer codes (sparse targets). reverse: the expression read backwards, pad still in
    front (Keras addition_rnn). padding "per_term": each operand left-padded to the widest operand
    ('3*10' -> ' 3*10'). mask: pad steps marked for the model to skip (one-hot: all-zero vectors)."""

    limits: Limits
    alphabet: str = ""  # "" = the limits' alphabet; stored so a saved codec reads back the same
    encoding: str = "onehot"
    reverse: bool = False
    padding: str = "left"
    mask: bool = False

    def __post_init__(self) -> None:
        if not self.alphabet:
            object.__setattr__(self, "alphabet", self.limits.alphabet)

    @property
    def in_width(self) -> int:
        return self.limits.expression_width

    @property
    def out_width(self) -> int:
        return self.limits.answer_width

    @property
    def n_symbols(self) -> int:
        return len(self.alphabet)

    @property
    def pad_code(self) -> int:
        return self.alphabet.index(" ")

    @property
    def loss(self) -> str:
        return "sparse_categorical_crossentropy" if self.encoding == "integer" else "categorical_crossentropy"

    def pad(self, texts, width: int) -> np.ndarray:
        return np.char.rjust(np.asarray(texts, dtype=str), width)

    def codes(self, chars: np.ndarray) -> np.ndarray:
        """Code points -> alphabet codes; any other character is refused."""
        lookup = np.full(257, -1, dtype=np.intp)  # take(mode="clip") sends code points past 255 to the last
        lookup[[ord(c) for c in self.alphabet]] = np.arange(self.n_symbols)
        codes = lookup.take(chars, mode="clip")
        if (codes < 0).any():
            raise AdderError(f"characters outside the alphabet {self.alphabet!r}")
        return codes

    def aligned_codes(self, chars: np.ndarray, lengths: np.ndarray, width: int, reverse: bool = False) -> np.ndarray:
        if lengths.max(initial=0) > width:
            raise AdderError(f"strings longer than the model's {width} characters")
        return self.codes(right_aligned(chars, lengths, width, reverse))

    def to_codes(self, texts, width: int) -> np.ndarray:
        """(n, width) alphabet codes of strings left-padded with spaces."""
        return self.aligned_codes(*char_matrix(texts), width)

    def one_hot(self, codes: np.ndarray, mask: bool = False) -> np.ndarray:
        """float32 one-hot vectors; mask: the pad as an all-zero vector, what keras.layers.Masking(0.0) skips."""
        vectors = np.eye(self.n_symbols, dtype=np.float32)
        if mask:
            vectors[self.pad_code] = 0.0
        return vectors.take(codes, axis=0)

    def layout(self, texts) -> np.ndarray:
        """Expressions as the model reads them, before the left padding to in_width. Readable, one string
        at a time; encode_inputs does the same to character matrices (the tests hold the two equal)."""
        texts = np.asarray(texts, dtype=str)
        if self.padding == "per_term":
            width = self.limits.operand_width
            texts = np.array([OPERAND.sub(lambda m: m[0].rjust(width), t) for t in texts.tolist()], dtype=str)
        if self.reverse:
            texts = np.array([t[::-1] for t in texts.tolist()], dtype=str)
        return texts

    def encode_inputs(self, texts) -> np.ndarray:
        chars, lengths = char_matrix(texts)
        if self.padding == "per_term":
            chars, lengths = pad_operands(chars, lengths, self.limits.operand_width)
        codes = self.aligned_codes(chars, lengths, self.in_width, self.reverse)
        if self.encoding == "integer":
            return ((codes - self.pad_code) % self.n_symbols).astype(np.int32)
        return self.one_hot(codes, self.mask)

    def decode_inputs(self, x: np.ndarray) -> np.ndarray:
        """encode_inputs undone: the canonical expressions back."""
        if self.encoding == "integer":
            codes = (np.asarray(x) + self.pad_code) % self.n_symbols
        else:
            codes = np.where(np.asarray(x).any(axis=-1), np.asarray(x).argmax(axis=-1), self.pad_code)
        texts = np.char.replace(self.chars(codes), " ", "")
        return np.array([t[::-1] for t in texts.tolist()], dtype=str) if self.reverse else texts

    def encode_targets(self, answers) -> np.ndarray:
        answers = np.asarray(answers)
        if answers.dtype.kind not in "iu":
            codes = self.to_codes(answers.astype(str), self.out_width)
        else:
            low, high = (int(answers.min()), int(answers.max())) if len(answers) else (0, 0)
            if high - low < len(answers) // 2:  # answers repeat: encode each value once, then gather
                return self.encode_targets(np.arange(low, high + 1)).take(answers - low, axis=0)
            codes = self.codes(number_chars(answers, self.out_width))
        return codes.astype(np.int32) if self.encoding == "integer" else self.one_hot(codes)

    def chars(self, codes: np.ndarray) -> np.ndarray:
        """(n, width) codes -> strings with the pad spaces stripped."""
        chars = np.array(list(self.alphabet))[codes]
        return np.char.strip(chars.astype("U1").view(f"U{codes.shape[1]}")[:, 0])

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (n, out_width, n_symbols), or integer codes (n, out_width), -> answers as stripped strings."""
        outputs = np.asarray(outputs)
        return self.chars(outputs if outputs.ndim == 2 else outputs.argmax(axis=-1))


@dataclass(frozen=True)
class NumberCodec(Checked):
    """The tutorial's mapping framing: operands as numbers scaled by terms * largest."""

    limits: Limits

    @property
    def scale(self) -> float:
        return float(self.limits.max_answer)

    def operands(self, texts) -> np.ndarray:
        columns = operand_digits(*char_matrix(texts), self.limits.terms)
        values = np.zeros((len(columns), self.limits.terms), dtype=np.uint64)
        for place in range(columns.shape[1] - 1, -1, -1):
            values = values * 10 + columns[:, place]
        return values.astype(np.float64).astype(np.float32)  # rounded as float(text) then float32 rounds it

    def encode_inputs(self, texts) -> np.ndarray:
        return self.operands(texts) / self.scale

    def encode_targets(self, answers) -> np.ndarray:
        return np.asarray(answers, dtype=np.float32) / self.scale

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions -> answers in original units, rounded like the tutorial's invert()."""
        return np.rint(np.asarray(outputs).reshape(-1) * self.scale).astype(np.int64).astype(str)


@dataclass(frozen=True)
class ColumnCodec(Checked):
    """Aligned digit columns, least significant first, one-hot per term; one answer digit per step.
    Length-agnostic: trained on the task's operands, it accepts operands up to max_digits long."""

    limits: Limits
    max_digits: int = 1000

    @property
    def train_steps(self) -> int:
        return len(str(self.limits.high)) + digits.carry_steps(self.limits.terms)

    @property
    def out_width(self) -> int:
        return self.train_steps

    @property
    def features(self) -> int:
        return 10 * self.limits.terms

    def check(self, expression: str) -> str:
        return replace(self.limits, low=0, high=10**self.max_digits - 1).check(expression)

    def encode_inputs(self, texts) -> np.ndarray:
        columns = operand_digits(*char_matrix(texts), self.limits.terms)
        steps = max(self.train_steps, columns.shape[1] + digits.carry_steps(self.limits.terms))
        columns = np.pad(columns, ((0, 0), (0, steps - columns.shape[1]), (0, 0)))
        one_hot = np.eye(10, dtype=np.float32).take(columns.astype(np.intp), axis=0)  # (n, steps, terms, 10)
        return one_hot.reshape(len(columns), steps, self.features)

    def encode_targets(self, answers) -> np.ndarray:
        answers = np.asarray(answers)
        if answers.dtype.kind in "iu" and (answers >= 0).all():
            return place_digits(answers, self.train_steps)
        return digits.digit_columns(answers.astype(str), self.train_steps)[:, :, 0]  # strings, negatives: as digit_columns reads them

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return digits.digits_to_text(outputs.argmax(axis=-1).astype(np.int8))


@dataclass(frozen=True)
class TokenCodec(CharCodec):
    """For decoders fed their own previous output (attention, transformer): the expression as integer
    codes; the answer as tokens, least significant digit first (the order carries flow), closed by an
    end symbol. Training feeds the true previous token (teacher forcing); inference decodes greedily."""

    encoding: str = "integer"

    OUTPUT = "0123456789-"  # token ids 0-10; then END and START
    MINUS, END, START = 10, 11, 12

    @property
    def out_steps(self) -> int:
        return self.out_width + 1

    @property
    def out_symbols(self) -> int:
        return self.START + 1

    def encode_targets(self, answers) -> np.ndarray:
        """Answers as tokens: the sign first (so a difference commits to it before its digits), then the
        digits least significant first, then END to the last step. -33 -> [-, 3, 3, END, ...]."""
        answers = np.asarray(answers).astype(np.int64)
        magnitude, negative = np.abs(answers), (answers < 0).astype(np.int64)
        widths = number_widths(magnitude)
        place = np.arange(self.out_steps) - negative[:, None]  # which digit each step holds
        digit = magnitude[:, None] // 10 ** np.clip(place, 0, 18) % 10
        tokens = np.where((place >= 0) & (place < widths[:, None]), digit, self.END)
        tokens[:, 0] = np.where(negative == 1, self.MINUS, tokens[:, 0])
        return tokens.astype(np.int32)

    def decoder_inputs(self, targets: np.ndarray) -> np.ndarray:
        return np.concatenate([np.full((len(targets), 1), self.START, np.int32), targets[:, :-1]], axis=1)

    def training_pair(self, texts, answers) -> tuple:
        y = self.encode_targets(answers)
        return (self.encode_inputs(texts), self.decoder_inputs(y)), y

    def infer(self, model, x: np.ndarray) -> np.ndarray:
        """Greedy decoding: each pass fixes one more token; causal decoders keep earlier ones unchanged."""
        tokens = np.full((len(x), self.out_steps), self.START, np.int32)
        for step in range(self.out_steps):
            probs = run_batches(model, [x, tokens])
            if step + 1 < self.out_steps:
                tokens[:, step + 1] = probs[:, step].argmax(axis=-1)
            if (tokens[:, 1 : step + 2] == self.END).any(axis=1).all():
                break  # every answer has ended
        return probs

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        tokens = np.asarray(outputs).argmax(axis=-1)
        ended = np.cumsum(tokens >= self.END, axis=1) > 0
        chars = np.array(list(self.OUTPUT + "  "))[np.where(ended, self.END, tokens)]
        texts = np.char.strip(chars.astype("U1").view(f"U{tokens.shape[1]}")[:, 0]).tolist()
        return np.array([f"-{t[1:][::-1]}" if t.startswith("-") else t[::-1] for t in texts], dtype=str)


Codec = CharCodec | NumberCodec | ColumnCodec | TokenCodec
CODECS = {"chars": CharCodec, "numbers": NumberCodec, "columns": ColumnCodec, "tokens": TokenCodec}


def save_codec(codec: Codec, path: Path) -> None:
    path.write_text(json.dumps(codec_spec(codec), indent=2) + "\n")


def codec_spec(codec: Codec) -> dict:
    """The codec as plain JSON values: what codec.json holds."""
    return {"kind": next(k for k, cls in CODECS.items() if type(codec) is cls), **asdict(codec)}


def codec_of(spec: dict) -> Codec:
    spec = dict(spec)
    cls = CODECS[spec.pop("kind")]
    return cls(**{**spec, "limits": Limits(**spec["limits"])})


def load_codec(path: Path) -> Codec:
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdderError(f"no codec at {path}; is this a trained model folder?") from None
    return codec_of(spec)
