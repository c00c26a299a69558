"""Answers as token sequences, for decoders fed their own previous output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.codec.base import run_batches
from pipeline.codec.chars import CharCodec
from pipeline.digits import number_widths


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
