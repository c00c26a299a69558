"""The tutorial's framing: expression characters in, answer characters out, a fixed width each."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.codec.base import Checked
from pipeline.codec.matrices import char_matrix, number_chars, pad_operands, right_aligned
from pipeline.errors import AdderError
from pipeline.expressions import Limits

OPERAND = re.compile(r"[0-9]+")


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
