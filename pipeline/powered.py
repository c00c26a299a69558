"""`adder study`: a study of params.yaml run as a sweep over seeds, with as many seeds per arm as its questions
need for every 95% interval to be at most ±half_width (docs/decisions.md, "Studies powered to settle").

It trains `pilot` seeds per arm, then sizes each arm from the measured seed spread: a difference of two arms
has an interval about z·sqrt(s_a² + s_b²)/sqrt(n) wide each side (seed-to-seed noise dominates; the test
problems are shared and paired), so n = (z/half_width)²·(s_a² + s_b²), an arm taking the largest n of its
questions. Once every arm has its seeds, the bootstrap of pipeline.stats gives each interval; an arm in a
question still too wide is sized again from the spread now measured, up to max_seeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import PARAMS_FILE, Params, load_params, project_root
from pipeline.errors import AdderError
from pipeline.space import SEED, trial_params
from pipeline.stats import LEVEL, METHOD, difference
from pipeline.studies import points
from pipeline.sweep import Plan, Trial, run


def seeds_needed(spread_a: float, spread_b: float, half_width: float) -> int:
    """Seeds per arm for a difference of two arms, each with this seed-to-seed standard deviation, to have
    a 95% interval of ±half_width (normal approximation; at least 2)."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + LEVEL / 2)
    return max(2, math.ceil((z / half_width) ** 2 * (spread_a**2 + spread_b**2)))


class PoweredStudy:
    """The plan of trials of one or more studies: pilot seeds per arm, then as many more as their questions
    need. A question is a study's baseline against one other arm; studies sharing a baseline share its trials."""

    def __init__(self, params: Params, raw: dict, studies: list[str], half_width: float, pilot: int, max_seeds: int):
        self.params = params
        self.questions = [(name, params.studies[name][0], other)
                          for name in studies for other in params.studies[name][1:]]
        self.arms = list(dict.fromkeys(arm for _, *pair in self.questions for arm in pair))
        self.raw, self.half_width, self.max_seeds = raw, half_width, max_seeds
        self.target = dict.fromkeys(self.arms, pilot)
        self.asked = dict.fromkeys(self.arms, 0)
        self.results: dict[str, list[Trial]] = {arm: [] for arm in self.arms}
        self.outstanding = 0
        self.numbers = iter(range(1, 1_000_000))
        self.gaps: dict[tuple, dict] = {}

    def ask(self) -> Trial | None:
        if self.outstanding == 0 and all(self.asked[a] >= self.target[a] for a in self.arms):
            self.resize()  # every trial asked so far has finished: size the arms from what they measured
        arm = next((a for a in self.arms if self.asked[a] < self.target[a]), None)
        if arm is None:
            return None
        self.asked[arm] += 1
        self.outstanding += 1
        overrides = {SEED: self.asked[arm]}
        return Trial(next(self.numbers), arm, overrides, trial_params(self.raw, arm, overrides))

    def tell(self, trial: Trial) -> None:
        self.outstanding -= 1
        if trial.error:
            raise AdderError(f"study trial #{trial.number} ({trial.exp_name} {trial.label}) failed: {trial.error}")
        self.results[trial.exp_name].append(trial)

    def mean(self, arm: str) -> float:
        return float(np.mean([t.metrics["exact_match"] for t in self.results[arm]]))

    def spread(self, arm: str) -> float:
        return float(np.std([t.metrics["exact_match"] for t in self.results[arm]], ddof=1))

    def correct(self, arm: str) -> np.ndarray:
        rows = sorted(self.results[arm], key=lambda t: t.overrides[SEED])
        return np.array([[c == "1" for c in t.result["correct"]] for t in rows], dtype=bool)

    def too_wide(self, gap: dict) -> bool:
        return (gap["high"] - gap["low"]) / 2 > self.half_width

    def resize(self) -> None:
        """New targets: from the spread for arms short of the formula's seeds, else (the interval measured
        still too wide) a quarter more, within max_seeds."""
        for _, baseline, other in self.questions:
            need = min(self.max_seeds, seeds_needed(self.spread(baseline), self.spread(other), self.half_width))
            for arm in (baseline, other):
                self.target[arm] = max(self.target[arm], need)
        if any(self.asked[a] < self.target[a] for a in self.arms):
            return
        self.gaps = {q: difference(self.correct(q[1]), self.correct(q[2])) for q in self.questions}
        for (_, baseline, other), gap in self.gaps.items():
            if self.too_wide(gap):
                for arm in (baseline, other):
                    self.target[arm] = min(self.max_seeds, math.ceil(self.asked[arm] * 1.25))

    def table(self) -> str:
        """The questions' answers as a markdown table, and the seeds each arm took."""
        head = (f"Powered for 95% intervals of at most ±{self.half_width * 100:g} points: "
                f"{sum(self.asked.values())} trials, each arm under seeds 1..n, every seed scored on the same "
                f"test split. Interval: {METHOD}.")
        header = "| study | change | seeds | exact match | seed sd | difference (95% interval) | ± | verdict |"
        lines = [head, "", header, "|---|---|---|---|---|---|---|---|"]
        for (name, baseline, other), gap in self.gaps.items():
            setting = self.params.study_setting(name)
            before, after = (getattr(self.params.experiments[arm], setting) for arm in (baseline, other))
            verdict = ("real: it helps" if gap["low"] > 0 else "real: it hurts") if gap["real"] else "noise"
            lines.append(
                f"| {name} | {setting}: {before} → {after} | {self.asked[baseline]} / {self.asked[other]} | "
                f"{self.mean(baseline):.1%} → {self.mean(other):.1%} | "
                f"{self.spread(baseline) * 100:.1f} / {self.spread(other) * 100:.1f} | "
                f"{points(gap['difference'])} ({points(gap['low'])} to {points(gap['high'])}) | "
                f"{(gap['high'] - gap['low']) / 2 * 100:.1f} | {verdict} |")
        short = [name for (name, _, other), gap in self.gaps.items() if self.too_wide(gap)]
        if short:
            lines.append(f"\nNot settled within {self.max_seeds} seeds an arm: {', '.join(short)}.")
        return "\n".join(lines)


def study(names: list[str], half_width_points: float, pilot: int, max_seeds: int, address: str | None,
          cpus_per_trial: float, say: Callable[[str], None] = print) -> Path:
    """`adder study NAME...`: the powered studies, their table printed, written to reports/studies/<names>.md
    and set as the description of their MLflow sweep run."""
    root = project_root()
    params = load_params()
    if not names:
        raise AdderError(f"name one or more studies; params.yaml has: {', '.join(params.studies) or 'none'}")
    for name in names:
        if name not in params.studies:
            raise AdderError(f"unknown study {name!r}; known: {', '.join(params.studies) or 'none in params.yaml'}")
    if not 0 < half_width_points < 50:
        raise AdderError(f"--half-width {half_width_points:g}: points of exact match, between 0 and 50")
    if not 2 <= pilot <= max_seeds:
        raise AdderError(f"--pilot {pilot} and --max-seeds {max_seeds}: need 2 <= pilot <= max-seeds")
    raw = yaml.safe_load((root / PARAMS_FILE).read_text())
    planned = PoweredStudy(params, raw, names, half_width_points / 100, pilot, max_seeds)
    for arm in planned.arms:
        trial_params(raw, arm, {SEED: max_seeds})  # every seed is valid for every arm
    described = {"experiments": planned.arms, "studies": names, "half_width_points": half_width_points,
                 "pilot": pilot, "max_seeds": max_seeds, "cpus_per_trial": cpus_per_trial}
    _, recorder = run(Plan(planned.ask, planned.tell), params, planned.arms, f"study {' '.join(names)}", address,
                      cpus_per_trial, described, say)
    text = planned.table()
    say("\n" + text)
    recorder.describe(text)
    out = root / "reports" / "studies" / f"{'-'.join(names)}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out
