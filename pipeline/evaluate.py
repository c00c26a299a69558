"""Scoring: predictions as strings compared with the exact answers."""

from __future__ import annotations

import numpy as np

from pipeline.codec import Codec, NumberCodec, RewriteCodec
from pipeline.decoding import outputs
from pipeline.digits import long_problems
from pipeline.rewriting import rewrite

LENGTH_PROBLEMS = 1000  # per operand length in the length-generalisation test


def predict_answers(model, codec: Codec, texts) -> np.ndarray:
    """Answers as strings for problems as (validated, space-free) text."""
    if len(texts) == 0:
        return np.empty(0, dtype=str)
    if isinstance(codec, RewriteCodec):
        return rewrite(model, codec, texts).answers
    return codec.decode(outputs(model, codec, codec.encode_inputs(texts)))


def predict_explained(model, codec: Codec, texts, steps: bool = False) -> tuple[np.ndarray, np.ndarray | None, list]:
    """Answers, the worked steps before them (with steps, for a codec that writes them; else None), and for
    each problem None or why it has no answer: a step model's chain of calls can stop short of a number
    (pipeline.rewriting); other models always answer."""
    if isinstance(codec, RewriteCodec) and len(texts):
        chains = rewrite(model, codec, texts)
        return chains.answers, chains.worked if steps else None, chains.errors
    answers, worked = predict_worked(model, codec, texts) if steps else (predict_answers(model, codec, texts), None)
    return answers, worked, [None] * len(texts)


def predict_worked(model, codec: Codec, texts) -> tuple[np.ndarray, np.ndarray]:
    """Answers and the worked steps the model wrote before them (';' between steps), for a codec that
    writes steps."""
    if len(texts) == 0:
        return np.empty(0, dtype=str), np.empty(0, dtype=str)
    if isinstance(codec, RewriteCodec):
        chains = rewrite(model, codec, texts)
        return chains.answers, chains.worked
    written = outputs(model, codec, codec.encode_inputs(texts))
    return codec.decode(written), codec.worked(written)


def exact_match(predicted: np.ndarray, answers: np.ndarray) -> float:
    """Fraction of problems whose whole answer is right."""
    return float(np.mean(predicted == np.asarray(answers).astype(str)))


def char_accuracy(predicted: np.ndarray, answers: np.ndarray, width: int) -> float:
    """Fraction of answer characters right, both sides left-padded to the output width."""
    expected = np.char.rjust(np.asarray(answers).astype(str), width)
    got = np.char.rjust(predicted.astype(str), width)
    as_chars = lambda a: a.astype(f"U{width}").view("U1").reshape(len(a), -1)[:, :width]
    return float(np.mean(as_chars(expected) == as_chars(got)))


def rmse(predicted: np.ndarray, answers: np.ndarray) -> float:
    """Root mean squared error in original units (the tutorial's score)."""
    from sklearn.metrics import mean_squared_error  # seconds of start-up that only the naive models need

    return float(np.sqrt(mean_squared_error(np.asarray(answers, dtype=float), predicted.astype(float))))


def score(predicted: np.ndarray, answers: np.ndarray, codec: Codec) -> dict[str, float]:
    if isinstance(codec, NumberCodec):
        return {"rmse": rmse(predicted, answers), "exact_match": exact_match(predicted, answers)}
    return {
        "exact_match": exact_match(predicted, answers),
        "char_accuracy": char_accuracy(predicted, answers, codec.out_width),
    }


def length_generalisation(model, codec: Codec, lengths, terms: int, seed: int) -> dict[int, float]:
    """Exact match on problems whose operands have exactly n digits, for each n in lengths."""
    rng = np.random.default_rng(seed)
    scores = {}
    for n in lengths:
        texts, answers = long_problems(LENGTH_PROBLEMS, n, terms, rng)
        scores[n] = exact_match(predict_answers(model, codec, texts), answers)
    return scores
