"""Text as character matrices, shared by the codecs that read expression text."""

from __future__ import annotations

import numpy as np

from pipeline.digits import number_widths
from pipeline.errors import AdderError

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
