"""A step model's answers: each expression rewritten by one reduction per call, every call's rewrite fed back
in, batched over all the expressions still being worked, until a number remains. A rewrite that is not an
expression, that the model cannot read back, or a chain longer than its expression can need stops that
expression alone, with the reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.codec import RewriteCodec
from pipeline.decoding import outputs
from pipeline.expressions import is_expression, shown

NUMBER = re.compile(r"-?[0-9]+")
STEP_SEPARATOR = ";"


def calls_allowed(expression: str) -> int:
    """The most calls an expression can need: each operation takes one, a product of two numbers of two or
    more digits one more (its partial products), and the last call writes the answer."""
    operations = len(re.findall(r"[0-9)][-+*]", expression))
    return 2 * operations + 1


@dataclass(frozen=True)
class Chains:
    answers: np.ndarray  # str: the number each chain ended on, '' where it ended on an error
    worked: np.ndarray  # str: every rewrite before the answer, ';' between
    errors: list  # per expression: None, or why its chain stopped short of a number


def rewrite(model, codec: RewriteCodec, texts) -> Chains:
    """Calls the model on every expression, then on each rewrite that is still an expression, until each
    chain ends on a number or an error."""
    texts = [str(t) for t in np.asarray(texts, dtype=str).tolist()]
    answers, chains, errors = [""] * len(texts), [[] for _ in texts], [None] * len(texts)
    current = list(texts)
    limits = [calls_allowed(t) for t in texts]
    working = [row for row, text in enumerate(texts) if not too_long(codec, text, errors, row, 0)]
    call = 0
    while working:
        call += 1
        wrote = codec.decode(outputs(model, codec, codec.encode_inputs([current[row] for row in working])))
        still = []
        for row, text in zip(working, wrote.tolist()):
            if NUMBER.fullmatch(text):
                answers[row] = text
            elif not is_expression(text):
                errors[row] = f"call {call} wrote {shown(text)}, not an expression"
            elif call >= limits[row]:
                errors[row] = (f"no number after {call} calls, the most {shown(texts[row])} can take "
                               f"(last: {shown(text)})")
            elif not too_long(codec, text, errors, row, call):
                chains[row].append(text)
                current[row] = text
                still.append(row)
        working = still
    worked = np.array([STEP_SEPARATOR.join(chain) for chain in chains] or [""], dtype=str)[: len(texts)]
    return Chains(np.array(answers or [""], dtype=str)[: len(texts)], worked, errors)


def too_long(codec: RewriteCodec, text: str, errors: list, row: int, call: int) -> bool:
    """Whether the model cannot read text back; if so, says why in errors[row]."""
    if len(text) <= codec.in_width:
        return False
    wrote = f"call {call} wrote {shown(text)}" if call else f"{shown(text)} has {len(text)} characters"
    errors[row] = f"{wrote}, longer than the {codec.in_width} the model reads"
    return True
