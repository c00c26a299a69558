"""Text <-> arrays. One codec object serves training, evaluation and prediction,
so the same string always becomes the same tensor."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline import digits
from pipeline.problems import number_widths
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

    def to_codes(self, texts, width: int) -> np.ndarray:
        """(n, width) integer codes of left-padded strings."""
        padded = self.pad(texts, width)
        if padded.dtype.itemsize // 4 > width:
            raise AdderError(f"strings longer than the model's {width} characters")
        raw = padded.astype(f"S{width}").view(np.uint8).reshape(len(padded), width)
        lookup = np.full(256, -1, dtype=np.int8)
        lookup[np.frombuffer(self.alphabet.encode(), dtype=np.uint8)] = np.arange(self.n_symbols)
        codes = lookup[raw]
        if (codes < 0).any():
            raise AdderError(f"characters outside the alphabet {self.alphabet!r}")
        return codes

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        return (codes[..., None] == np.arange(self.n_symbols, dtype=codes.dtype)).astype(np.float32)

    def layout(self, texts) -> np.ndarray:
        """Expressions as the model reads them, before the left padding to in_width."""
        texts = np.asarray(texts, dtype=str)
        if self.padding == "per_term":
            width = self.limits.operand_width
            texts = np.array([OPERAND.sub(lambda m: m[0].rjust(width), t) for t in texts.tolist()], dtype=str)
        if self.reverse:
            texts = np.array([t[::-1] for t in texts.tolist()], dtype=str)
        return texts

    def encode_inputs(self, texts) -> np.ndarray:
        codes = self.to_codes(self.layout(texts), self.in_width)
        if self.encoding == "integer":
            return ((codes.astype(np.int32) - self.pad_code) % self.n_symbols).astype(np.int32)
        x = self.one_hot(codes)
        if self.mask:
            x[codes == self.pad_code] = 0.0  # what keras.layers.Masking(0.0) skips
        return x

    def decode_inputs(self, x: np.ndarray) -> np.ndarray:
        """encode_inputs undone: the canonical expressions back."""
        if self.encoding == "integer":
            codes = (np.asarray(x) + self.pad_code) % self.n_symbols
        else:
            codes = np.where(np.asarray(x).any(axis=-1), np.asarray(x).argmax(axis=-1), self.pad_code)
        texts = np.char.replace(self.chars(codes), " ", "")
        return np.array([t[::-1] for t in texts.tolist()], dtype=str) if self.reverse else texts

    def encode_targets(self, answers) -> np.ndarray:
        codes = self.to_codes(np.asarray(answers).astype(str), self.out_width)
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
        parts = np.char.split(np.asarray(texts, dtype=str), "+")
        return np.array(parts.tolist(), dtype=np.float32).reshape(len(parts), self.limits.terms)

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
        columns = digits.digit_columns(texts, terms=self.limits.terms)
        steps = max(self.train_steps, columns.shape[1] + digits.carry_steps(self.limits.terms))
        columns = np.pad(columns, ((0, 0), (0, steps - columns.shape[1]), (0, 0)))
        one_hot = np.eye(10, dtype=np.float32)[columns]  # (n, steps, terms, 10)
        return one_hot.reshape(len(columns), steps, self.features)

    def encode_targets(self, answers) -> np.ndarray:
        return digits.digit_columns(np.asarray(answers).astype(str), self.train_steps)[:, :, 0]

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
    kind = next(k for k, cls in CODECS.items() if type(codec) is cls)
    path.write_text(json.dumps({"kind": kind, **asdict(codec)}, indent=2) + "\n")


def load_codec(path: Path) -> Codec:
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdderError(f"no codec at {path}; is this a trained model folder?") from None
    cls = CODECS[spec.pop("kind")]
    return cls(**{**spec, "limits": Limits(**spec["limits"])})
