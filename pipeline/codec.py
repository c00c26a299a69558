"""Text <-> arrays. One codec object serves training, evaluation and prediction,
so the same string always becomes the same tensor."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Task
from pipeline.errors import AdderError

# The tutorial's alphabet: codes 0-9 are the digits, then '+' and the pad space.
ALPHABET = "0123456789+ "
MAX_EXPRESSION_CHARS = 1000
EXPRESSION = re.compile(r"\d+(?:\+\d+)*")


@dataclass(frozen=True)
class Limits:
    """What the model was trained on; predict refuses anything else."""

    terms: int
    low: int
    high: int

    @classmethod
    def of(cls, task: Task) -> Limits:
        return cls(task.terms, task.low, task.high)

    def check(self, expression: str) -> str:
        """The expression without spaces, or an AdderError saying what is wrong with it."""
        shown = expression if len(expression) <= 40 else expression[:37] + "..."
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise AdderError(f"expression of {len(expression):,} characters is too long ({shown!r})")
        compact = re.sub(r"\s*\+\s*", "+", expression.strip())
        if not compact:
            raise AdderError("empty expression")
        if not compact.isascii() or not EXPRESSION.fullmatch(compact):
            raise AdderError(f"malformed expression {shown!r}: expected numbers joined by '+', like 12+50")
        operands = [int(t) for t in compact.split("+")]
        if len(operands) != self.terms:
            raise AdderError(f"{shown!r} has {len(operands)} terms; this model was trained on {self.terms}")
        if not all(self.low <= v <= self.high for v in operands):
            raise AdderError(f"{shown!r}: operands must be in {self.low}..{self.high} for this model")
        return "+".join(map(str, operands))  # canonical: no leading zeros, as in training

    @property
    def max_answer(self) -> int:
        return self.terms * self.high


@dataclass(frozen=True)
class CharCodec:
    """Characters as one-hot vectors, the whole string left-padded with spaces
    (the tutorial's encoding: [3, 10] -> ' 3+10' -> [11, 3, 10, 1, 0])."""

    limits: Limits
    alphabet: str = ALPHABET

    @property
    def in_width(self) -> int:
        return self.limits.terms * len(str(self.limits.high)) + self.limits.terms - 1

    @property
    def out_width(self) -> int:
        return len(str(self.limits.max_answer))

    @property
    def n_symbols(self) -> int:
        return len(self.alphabet)

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
        return np.eye(self.n_symbols, dtype=np.float32)[codes]

    def encode_inputs(self, texts) -> np.ndarray:
        return self.one_hot(self.to_codes(texts, self.in_width))

    def encode_targets(self, answers) -> np.ndarray:
        return self.one_hot(self.to_codes(np.asarray(answers).astype(str), self.out_width))

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (n, out_width, n_symbols) -> answers as stripped strings."""
        chars = np.array(list(self.alphabet))[outputs.argmax(axis=-1)]
        return np.char.strip(chars.astype("U1").view(f"U{outputs.shape[1]}")[:, 0])


@dataclass(frozen=True)
class NumberCodec:
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


Codec = CharCodec | NumberCodec
CODECS = {"chars": CharCodec, "numbers": NumberCodec}


def save_codec(codec: Codec, path: Path) -> None:
    kind = next(k for k, cls in CODECS.items() if isinstance(codec, cls))
    path.write_text(json.dumps({"kind": kind, **asdict(codec)}, indent=2) + "\n")


def load_codec(path: Path) -> Codec:
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdderError(f"no codec at {path}; is this a trained model folder?") from None
    cls = CODECS[spec.pop("kind")]
    return cls(**{**spec, "limits": Limits(**spec["limits"])})
