"""What a sweep varies: `-S key=values` settings of one experiment, read as a grid or a search space, and each
trial's params (validated as params.yaml is) and the `dvc exp run` command that reproduces it.

    -S learning_rate=0.01,0.02    a list: a grid axis (or a choice, in a search)
    -S seed=1..20                 whole numbers 1 to 20: an axis of seeds (the experiment's `seeds: [n]`)
    -S learning_rate=0.001:0.1    a range: a search (Optuna's TPE), uniform; add :log for log-uniform
"""

from __future__ import annotations

import copy
import itertools
import re
import shlex
from dataclasses import dataclass

import yaml

from pipeline.config import Experiment, Params, parse_params
from pipeline.errors import AdderError

SEED = "seed"  # an axis of seeds: each trial trains under one, its experiment's `seeds: [seed]`


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple = ()  # a list of values (grid, or a choice in a search)
    low: float | None = None  # or a range (search only)
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


def split_values(text: str) -> list[str]:
    """'0.1,[64,64],x' -> ['0.1', '[64,64]', 'x']: commas inside brackets belong to their value."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def scalar(text: str, setting: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise AdderError(f"-S {setting}: {text!r} is not a value") from None


def parse_axis(setting: str) -> Axis:
    """One `-S key=values` setting as an Axis; AdderError naming it when it cannot be read."""
    key, sep, text = setting.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise AdderError(f"-S {setting}: expected key=value[,value...] (e.g. -S learning_rate=0.01,0.02)")
    if key != SEED and key not in Experiment.model_fields:
        raise AdderError(f"-S {key}: unknown key; allowed: {SEED}, {', '.join(Experiment.model_fields)}")
    if key in ("task", "model", "seeds"):
        raise AdderError(f"-S {key}: a sweep varies one experiment's settings; sweep another experiment, "
                         "or vary seeds with -S seed=1..N")
    if m := re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", text):
        first, last = int(m[1]), int(m[2])
        if last < first:
            raise AdderError(f"-S {setting}: an empty range ({first} to {last})")
        return Axis(key, tuple(range(first, last + 1)))
    if ":" in text and "[" not in text:
        low, high, *rest = (part.strip() for part in text.split(":"))
        bounds = [scalar(low, setting), scalar(high, setting)]
        if rest not in ([], ["log"]) or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
            raise AdderError(f"-S {setting}: a range is low:high or low:high:log, two numbers")
        if bounds[0] >= bounds[1] or (rest and bounds[0] <= 0):
            raise AdderError(f"-S {setting}: a range needs low < high (and low > 0 with :log)")
        return Axis(key, low=bounds[0], high=bounds[1], log=bool(rest))
    values = tuple(scalar(v.strip(), setting) for v in split_values(text))
    if any(v is None for v in values):
        raise AdderError(f"-S {setting}: an empty value in the list")
    if len(set(map(repr, values))) < len(values):
        raise AdderError(f"-S {setting}: a value listed twice")
    return Axis(key, values)


def parse_axes(settings: list[str]) -> list[Axis]:
    axes = [parse_axis(s) for s in settings]
    keys = [a.key for a in axes]
    if repeated := sorted({k for k in keys if keys.count(k) > 1}):
        raise AdderError(f"-S {repeated[0]}: given twice; list its values in one setting (key=v1,v2)")
    return axes


def grid(axes: list[Axis]) -> list[dict]:
    """Every combination of the axes' values, the first axis slowest."""
    if any(a.is_range for a in axes):
        raise AdderError("a range (low:high) is a search space, not a grid: give --trials N")
    return [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]


def applied(raw: dict, exp_name: str, overrides: dict) -> dict:
    """raw params (params.yaml as loaded) with an experiment's settings overridden."""
    raw = copy.deepcopy(raw)
    exp = raw["experiments"][exp_name]
    for key, value in overrides.items():
        if key == SEED:
            exp["seeds"] = [value]
        else:
            exp[key] = value
    return raw


def trial_params(raw: dict, exp_name: str, overrides: dict) -> Params:
    """A trial's params, validated as params.yaml is: a value its schema refuses is one line naming it."""
    described = " ".join(f"{k}={v}" for k, v in overrides.items())
    return parse_params(applied(raw, exp_name, overrides), f"-S {described}")


def dvc_setting(exp_name: str, key: str, value) -> str:
    if key == SEED:
        key, value = "seeds", [value]
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"experiments.{exp_name}.{key}={text}"


def dvc_command(exp_name: str, overrides: dict) -> str:
    """The `dvc exp run` that trains and scores this trial's configuration as a DVC experiment."""
    settings = " ".join(f"-S {shlex.quote(dvc_setting(exp_name, k, v))}" for k, v in overrides.items())
    return f"dvc exp run {settings}".strip()
