"""The report's seeds and studies sections: each experiment's spread over seeds, and one sentence per study
saying what changed, by how much, and whether the difference is real (pipeline/stats.py)."""

from __future__ import annotations

import numpy as np

from pipeline.config import Params
from pipeline.errors import AdderError
from pipeline.stats import METHOD, aggregate, difference


def correct_matrix(name: str, result: dict) -> np.ndarray:
    """(seeds, test problems) of 0/1 from an evaluation's per-seed results."""
    if not result.get("per_seed"):
        raise AdderError(f"evaluation/{name}.json has no per-seed results; re-run `adder evaluate {name}`")
    return np.array([[c == "1" for c in seed["correct"]] for seed in result["per_seed"]], dtype=bool)


def points(value: float) -> str:
    """A difference in exact match as signed percentage points: '+12.7', '-0.4'."""
    return f"{value * 100:+.1f}"


def spread(result: dict) -> dict:
    return aggregate([seed["exact_match"] for seed in result["per_seed"]])


def seeds_section(params: Params, results: dict[str, dict]) -> str:
    """A table of every experiment trained under more than one seed: mean, min, max and 95% t interval."""
    rows = [(name, spread(result)) for name, result in results.items() if len(result.get("per_seed", ())) > 1]
    if not rows:
        return ""
    lines = ["| experiment | seeds | mean | min | max | 95% interval of the mean |", "|---|---|---|---|---|---|"]
    for name, s in rows:
        lines.append(f"| {name} | {', '.join(str(seed) for seed in params.seeds_of(name))} | {s['mean']:.2%} | "
                     f"{s['min']:.2%} | {s['max']:.2%} | {s['low']:.2%} – {s['high']:.2%} |")
    return ("\n## Exact match over seeds\n\nEach experiment trained once per seed and scored on the same test split; "
            "the interval is Student's t over seeds.\n\n" + "\n".join(lines) + "\n")


def scored_studies(params: Params, results: dict[str, dict]) -> list[str]:
    """Studies whose experiments were all scored (compare scores every one; a partial set is a test's)."""
    return [study for study, names in params.studies.items() if all(name in results for name in names)]


Gaps = dict[str, dict[str, dict]]  # study -> other experiment -> stats.difference against the baseline


def study_gaps(params: Params, results: dict[str, dict]) -> Gaps:
    """Every scored study's other experiments against its baseline: stats.difference (difference, low, high,
    real). A bootstrap each, seconds in all: computed once, for the report and for MLflow."""
    gaps = {}
    for study in scored_studies(params, results):
        baseline, *others = params.studies[study]
        before = correct_matrix(baseline, results[baseline])
        gaps[study] = {name: difference(before, correct_matrix(name, results[name])) for name in others}
    return gaps


def study_metrics(gaps: Gaps) -> dict[str, dict[str, float]]:
    """Per experiment that a study changes, its difference from the study's baseline and the interval, as
    MLflow metrics of its run: study_<study>_difference, _low and _high (exact match, as fractions)."""
    found: dict[str, dict[str, float]] = {}
    for study, others in gaps.items():
        for name, gap in others.items():
            figures = {f"study_{study}_{k}": float(gap[k]) for k in ("difference", "low", "high")}
            found.setdefault(name, {}).update(figures)
    return found


def study_sentence(params: Params, study: str, results: dict[str, dict], gaps: dict[str, dict]) -> str:
    """'**masking** (add2; mask: False → True): exact match 71.2% → 73.0% (3 seeds each), +1.8 points
    (95% interval -1.0 to +4.5): not distinguishable from noise.'"""
    baseline = params.studies[study][0]
    setting = params.study_setting(study)
    before = results[baseline]
    parts = []
    for name, gap in gaps.items():
        verdict = "a real difference" if gap["real"] else "not distinguishable from noise"
        old, new = getattr(params.experiments[baseline], setting), getattr(params.experiments[name], setting)
        parts.append(f"{setting}: {old} → {new} ({name}) moves exact match from {spread(before)['mean']:.1%} to "
                     f"{spread(results[name])['mean']:.1%} ({len(before['per_seed'])} vs "
                     f"{len(results[name]['per_seed'])} seeds), {points(gap['difference'])} points "
                     f"(95% interval {points(gap['low'])} to {points(gap['high'])}): {verdict}")
    return f"- **{study}** ({params.experiments[baseline].task}): " + "; ".join(parts) + "."


def studies_section(params: Params, results: dict[str, dict], gaps: Gaps | None = None) -> str:
    gaps = study_gaps(params, results) if gaps is None else gaps
    if not gaps:
        return ""
    sentences = [study_sentence(params, study, results, others) for study, others in gaps.items()]
    return (f"\n## Studies\n\nEach study changes one setting of its first experiment. Interval: {METHOD}; "
            "a difference is real when its interval excludes zero.\n\n" + "\n".join(sentences) + "\n")
