"""Text <-> arrays. One codec object serves training, evaluation, prediction and serving, so the same
string always becomes the same tensor; only the codec knows how a model frames its input and answer.
One module per framing family: chars (the tutorial's fixed-width characters), numbers (the mapping
framing), columns (digit columns) and tokens (decoders fed their own output)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from pipeline.codec.chars import CharCodec
from pipeline.codec.columns import ColumnCodec
from pipeline.codec.numbers import NumberCodec
from pipeline.codec.rewrites import RewriteCodec
from pipeline.codec.tokens import TokenCodec
from pipeline.errors import AdderError
from pipeline.expressions import Limits

__all__ = ["CharCodec", "Codec", "ColumnCodec", "Limits", "NumberCodec", "RewriteCodec", "TokenCodec", "accepting",
           "codec_of", "codec_spec", "lengths_in", "load_codec", "save_codec"]

Codec = CharCodec | NumberCodec | ColumnCodec | TokenCodec | RewriteCodec
CODECS = {"chars": CharCodec, "numbers": NumberCodec, "columns": ColumnCodec, "tokens": TokenCodec,
          "rewrites": RewriteCodec}
GENERALISES = 0.99  # the exact match at which a model counts as adding operands of a length


def accepting(codec: Codec, lengths: dict[int, float]) -> Codec:
    """codec, accepting operands as long as its model was measured to add: up to the longest of lengths
    (digits -> exact match) below which every measured length scores at least GENERALISES."""
    longest = None
    for digits in sorted(lengths):
        if lengths[digits] < GENERALISES:
            break
        longest = digits
    return codec if longest is None else codec.accepting(longest)


LENGTH_FIGURE = re.compile(r"exact_match_([0-9]{1,5})_digits")


def lengths_in(figures: dict) -> dict[int, float]:
    """{digits: exact match} from an evaluation's figures, e.g. {"exact_match_100_digits": 1.0}; anything
    else in figures is ignored."""
    return {int(m.group(1)): float(value) for key, value in figures.items()
            if (m := LENGTH_FIGURE.fullmatch(key)) and isinstance(value, (int, float))}


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
