"""Answers as token sequences, for decoders fed their own previous output: the answer alone, most or least
significant digit first, or worked steps before it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.codec.base import run_batches
from pipeline.codec.chars import CharCodec
from pipeline.codec.matrices import char_matrix
from pipeline.errors import AdderError

ANSWERS = ("plain", "reversed", "steps")  # "rewrite" is RewriteCodec's
STEP_SEPARATOR = ";"


def reverse_digit_runs(chars: np.ndarray) -> np.ndarray:
    """(n, width) code points with every run of digits read backwards ('-123;4*56' -> '-321;4*65'): each
    digit moves to the mirror place between its run's first and last digit. Its own inverse."""
    n, width = chars.shape
    digit = (chars >= ord("0")) & (chars <= ord("9"))
    place = np.broadcast_to(np.arange(width), (n, width))
    begins = digit & ~np.pad(digit, ((0, 0), (1, 0)))[:, :-1]
    ends = digit & ~np.pad(digit, ((0, 0), (0, 1)))[:, 1:]
    first = np.maximum.accumulate(np.where(begins, place, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, place, width)[:, ::-1], axis=1)[:, ::-1]
    return np.take_along_axis(chars, np.where(digit, first + last - place, place), axis=1)


@dataclass(frozen=True)
class TokenCodec(CharCodec):
    """For decoders fed their own previous output (attention, transformer): the expression as integer
    codes; the answer as tokens closed by an end symbol. Training feeds the true previous token (teacher
    forcing); inference decodes greedily.

    answer: how the answer is written. "reversed": least significant digit first, the order carries flow,
    the sign first (so a difference commits to it before its digits): -33 -> [-, 3, 3, END]. "plain": most
    significant first, as people write it. "steps": the generator's worked steps, then the answer, numbers
    least significant first: 47*36 -> '0282+1410;1692', each number reversed.
    Scored on the final answer alone. out_length: the tokens a steps answer may take (END included), set
    from the training split's longest; 0 for the other framings, whose width the limits fix."""

    encoding: str = "integer"
    answer: str = "reversed"
    out_length: int = 0

    OUTPUT = "0123456789-"  # token ids 0-10; then END and START
    MINUS, END, START = 10, 11, 12
    STEP_SYMBOLS = "+*=;()"  # token ids from 13, in worked steps only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.answer not in ANSWERS:
            raise AdderError(f"answer: one of {', '.join(ANSWERS)} (got {self.answer!r})")

    @property
    def writes_steps(self) -> bool:
        return self.answer == "steps"

    @property
    def out_steps(self) -> int:
        return self.out_length or self.out_width + 1

    @property
    def symbols(self) -> str:
        """The character of each token id ('\\0' for END and START)."""
        return self.OUTPUT + "\0\0" + (self.STEP_SYMBOLS if self.writes_steps else "")

    @property
    def out_symbols(self) -> int:
        return len(self.symbols)

    def target_text(self, answers, steps=None) -> np.ndarray:
        """What the model is taught to write, in reading order: the answer, after its steps if it writes them."""
        text = np.asarray(answers).astype(np.int64).astype(str)
        if self.writes_steps and steps is not None:
            text = np.where(steps == "", text, np.strings.add(np.strings.add(steps, STEP_SEPARATOR), text))
        return text

    @classmethod
    def fitted(cls, limits, answer: str | None, train=None) -> TokenCodec:
        """The codec of a decoder writing `answer` (reversed unless said), with room for the longest target
        of train (a split of problems) when given."""
        codec = cls(limits, answer=answer or "reversed")
        return codec if train is None else codec.sized_for(train.answer, train.steps)

    def sized_for(self, answers, steps=None) -> TokenCodec:
        """This codec with room for the longest target of a training split (steps only: other framings'
        widths come from the limits)."""
        if not self.writes_steps:
            return self
        return replace(self, out_length=int(np.strings.str_len(self.target_text(answers, steps)).max(initial=0)) + 1)

    def encode_targets(self, answers, steps=None) -> np.ndarray:
        """Target text as token ids, END to the last step."""
        chars, lengths = char_matrix(self.target_text(answers, steps))
        if lengths.max(initial=0) >= self.out_steps:
            raise AdderError(f"answers longer than the model's {self.out_steps - 1} tokens")
        chars = chars[:, : lengths.max(initial=0)]
        if self.answer != "plain":
            chars = reverse_digit_runs(chars)
        lookup = np.full(128, -1, dtype=np.int32)
        lookup[[ord(c) for c in self.symbols if c != "\0"]] = [i for i, c in enumerate(self.symbols) if c != "\0"]
        lookup[0] = self.END
        tokens = np.full((len(chars), self.out_steps), self.END, dtype=np.int32)
        tokens[:, : chars.shape[1]] = lookup.take(chars, mode="clip")
        if (tokens < 0).any():
            raise AdderError(f"answers with characters outside {self.OUTPUT + self.STEP_SYMBOLS!r}")
        return tokens

    def target_widths(self, targets: np.ndarray) -> np.ndarray:
        """Tokens up to and including each target's first END: the rest is padding."""
        return (targets == self.END).argmax(axis=1) + 1

    def decoder_inputs(self, targets: np.ndarray) -> np.ndarray:
        return np.concatenate([np.full((len(targets), 1), self.START, np.int32), targets[:, :-1]], axis=1)

    def training_pair(self, texts, answers, steps=None) -> tuple:
        y = self.encode_targets(answers, steps)
        return (self.encode_inputs(texts), self.decoder_inputs(y)), y

    def forced_exact_match(self, model, texts, answers, steps=None) -> float:
        """Fraction of problems whose whole target (steps, then answer) the model gets right token by token
        when fed the true tokens before each (teacher forcing): one pass, where greedy decoding takes one per
        token. Greedy decoding writes a target exactly when every one of its tokens is right this way, so for
        the answer-only framings this is their exact match; with steps it also asks every step right."""
        texts, answers = np.asarray(texts), np.asarray(answers)
        steps = None if steps is None else np.asarray(steps)
        fits = np.strings.str_len(self.target_text(answers, steps)) < self.out_steps  # a longer one is never written
        if not fits.any():
            return 0.0
        (x, decoder_inputs), targets = self.training_pair(texts[fits], answers[fits],
                                                          None if steps is None else steps[fits])
        predicted = run_batches(model, [x, decoder_inputs]).argmax(axis=-1)
        counted = np.arange(targets.shape[1]) < self.target_widths(targets)[:, None]
        return float(((predicted == targets) | ~counted).all(axis=1).sum() / len(fits))

    def written(self, outputs: np.ndarray) -> np.ndarray:
        """What the model wrote, in reading order, up to its first END (or START)."""
        tokens = np.asarray(outputs).argmax(axis=-1)
        ended = np.cumsum((tokens == self.END) | (tokens == self.START), axis=1) > 0
        points = np.array([ord(c) for c in self.symbols], dtype=np.uint32)
        chars = np.ascontiguousarray(np.where(ended, 0, points[tokens]), dtype=np.uint32)
        if self.answer != "plain":
            chars = reverse_digit_runs(chars)
        return chars.view(f"U{max(chars.shape[1], 1)}")[:, 0] if chars.shape[1] else np.full(len(chars), "")

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """The final answer (after the last step)."""
        return np.strings.rpartition(self.written(outputs), STEP_SEPARATOR)[2]

    def worked(self, outputs: np.ndarray) -> np.ndarray:
        return np.strings.rpartition(self.written(outputs), STEP_SEPARATOR)[0]
