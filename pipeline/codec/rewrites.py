"""A step model's framing: an expression in, the same expression after exactly one reduction out (the next
operation in evaluation order). The pipeline feeds each rewrite back in until a number remains
(pipeline.rewriting), so one call is always a short, local problem however deep the expression."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.codec.base import run_batches
from pipeline.codec.chars import CharCodec
from pipeline.codec.matrices import char_matrix
from pipeline.codec.tokens import STEP_SEPARATOR, TokenCodec, reverse_digit_runs
from pipeline.errors import AdderError

ROOM = 2  # reads and writes expressions up to this many times the longest in training: deeper ones too


def reductions(texts, answers, steps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every single reduction of every problem, from its worked steps: (before, after, origin), one row per
    reduction, `origin` the problem's row. (12+7)*3-40 -> ('(12+7)*3-40', '19*3-40'), ('19*3-40', '57-40'),
    ('57-40', '17'); a problem of one operation is one row, its answer the rewrite."""
    steps = [""] * len(texts) if steps is None else np.asarray(steps).tolist()
    before, after, origin = [], [], []
    for row, (text, worked, answer) in enumerate(zip(np.asarray(texts).tolist(), steps,
                                                     np.asarray(answers).astype(str).tolist())):
        chain = [text, *(worked.split(STEP_SEPARATOR) if worked else []), answer]
        before += chain[:-1]
        after += chain[1:]
        origin += [row] * (len(chain) - 1)
    return np.array(before, dtype=str), np.array(after, dtype=str), np.array(origin, dtype=np.int64)


@dataclass(frozen=True)
class RewriteCodec(TokenCodec):
    """Both sides are expressions written with every number least significant digit first, the order in
    which sums and products by one digit carry: '(12+7)*3' is read as '(21+7)*3' and its rewrite '19*3' is
    written '91*3'. The input is left-aligned, so the part of an expression a reduction leaves alone stands
    at the same positions on both sides. in_length and out_length (END included) are set from the
    training split's longest expression, with ROOM to spare."""

    answer: str = "rewrite"
    in_length: int = 0

    def __post_init__(self) -> None:
        CharCodec.__post_init__(self)  # its one framing: no answer to check

    @property
    def in_width(self) -> int:
        return self.in_length or super().in_width

    @property
    def input_digits(self) -> tuple[int, ...]:
        """The input codes of the digits 0-9."""
        return tuple((self.alphabet.index(d) - self.pad_code) % self.n_symbols for d in "0123456789")

    @property
    def writes_steps(self) -> bool:
        return True  # every rewrite but the last is a worked step

    @property
    def symbols(self) -> str:
        return self.OUTPUT + "\0\0" + self.STEP_SYMBOLS

    @classmethod
    def fitted(cls, limits, answer: str | None = None, train=None) -> RewriteCodec:
        """The codec, with room for train's expressions (a split of problems) when given."""
        codec = cls(limits)
        if train is None:
            return codec
        before, after, _ = reductions(train.text, train.answer, train.steps)
        longest = int(max(np.strings.str_len(before).max(initial=1), np.strings.str_len(after).max(initial=1)))
        return replace(codec, in_length=ROOM * longest, out_length=ROOM * longest + 1)

    def training_rows(self, problems):
        """One row per reduction: the expression before it as text, the expression after it as steps."""
        before, after, origin = reductions(problems.text, problems.answer, problems.steps)
        return replace(problems, text=before, answer=problems.answer[origin], steps=after)

    def target_text(self, answers, steps=None) -> np.ndarray:
        return np.asarray(steps, dtype=str)

    def encode_inputs(self, texts) -> np.ndarray:
        chars, lengths = char_matrix(texts)
        if lengths.max(initial=0) > self.in_width:
            raise AdderError(f"expressions longer than the model's {self.in_width} characters")
        padded = np.full((len(chars), self.in_width), ord(" "), dtype=np.uint32)
        padded[:, : chars.shape[1]] = np.where(chars == 0, ord(" "), reverse_digit_runs(chars))
        return ((self.codes(padded) - self.pad_code) % self.n_symbols).astype(np.int32)

    def input_widths(self, texts) -> np.ndarray:
        return np.strings.str_len(np.asarray(texts, dtype=str))

    def fits(self, texts) -> np.ndarray:
        """Which expressions the model can read."""
        return np.strings.str_len(np.asarray(texts, dtype=str)) <= self.in_width

    def forced_exact_match(self, model, texts, answers, steps=None) -> float:
        """Fraction of problems whose every reduction the model writes right when given the true expression
        before it (teacher forcing, one pass): then its chain of calls reaches the answer, each step right."""
        before, after, origin = reductions(texts, answers, steps)
        fits = self.fits(before) & (np.strings.str_len(after) < self.out_steps)
        right = np.zeros(len(before), dtype=bool)
        if fits.any():
            (x, decoder_inputs), targets = self.training_pair(before[fits], None, after[fits])
            # Read and written no wider than the longest (the padding after an expression is skipped and the
            # decoder is causal, so the cut changes no token): the width of the room, ROOM times that, is
            # most of a pass's cost, paid every epoch.
            x = x[:, : max(int(self.input_widths(before[fits]).max()), 1)]
            widths = self.target_widths(targets)
            decoder_inputs, targets = decoder_inputs[:, : widths.max()], targets[:, : widths.max()]
            predicted = run_batches(model, [x, decoder_inputs]).argmax(axis=-1)
            counted = np.arange(targets.shape[1]) < widths[:, None]
            right[fits] = ((predicted == targets) | ~counted).all(axis=1)
        wrong = np.bincount(origin, weights=~right, minlength=len(texts))
        return float((wrong == 0).mean()) if len(texts) else 0.0

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return self.written(outputs)  # one call's rewrite; pipeline.rewriting reads the answer off the chain
