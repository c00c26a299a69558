"""Exact match over several seeds, and whether two experiments really differ.

An experiment's seeds give a spread: the mean, min, max and a 95% Student t interval of the mean.
Two experiments of one task are scored on the same test problems, so their difference is judged by a
two-level bootstrap (Davison & Hinkley 1997, 3.8): each resample draws test problems (the same draw for
both experiments, a paired comparison) and, independently, each experiment's seeds, so the interval holds
both test-sampling and seed-to-seed noise. The difference is real when its 95% interval excludes zero."""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 4999
METHOD = "two-level bootstrap over test problems (paired) and seeds, 95% percentile interval"


def aggregate(per_seed: list[float]) -> dict[str, float]:
    """mean, min, max and the 95% t interval of the mean over seeds (the mean itself for one seed)."""
    values = np.asarray(per_seed, dtype=float)
    mean = float(values.mean())
    low = high = mean
    if len(values) > 1 and values.std() > 0:
        from scipy import stats  # a second of start-up that single-seed stages skip

        low, high = stats.t.interval(LEVEL, len(values) - 1, loc=mean, scale=stats.sem(values))
    return {"mean": mean, "min": float(values.min()), "max": float(values.max()),
            "low": max(0.0, float(low)), "high": min(1.0, float(high)), "seeds": len(values)}


def difference(baseline: np.ndarray, other: np.ndarray, seed: int = 0) -> dict[str, float | bool]:
    """other's exact match minus baseline's, with its 95% interval. Each argument is (seeds, problems) of
    0/1, one row per seed, the columns the same test problems in the same order."""
    baseline, other = np.asarray(baseline, dtype=float), np.asarray(other, dtype=float)
    if baseline.ndim != 2 or other.ndim != 2 or baseline.shape[1] != other.shape[1]:
        raise ValueError("both experiments need (seeds, problems) results on the same test problems")

    # Resampled: the test problems, and each experiment's seeds where it has more than one (a single
    # seed stays as it is: its seed-to-seed spread is unknown).
    sizes = (baseline.shape[1], len(baseline), len(other))
    resampled = [i for i, n in enumerate(sizes) if i == 0 or n > 1]

    def gap(*drawn, axis=-1):
        # Each resampled index array arrives with a leading batch axis: (batch, n).
        drawn = [np.atleast_2d(d).astype(int) for d in drawn]
        problems, seeds_a, seeds_b = (drawn[resampled.index(i)] if i in resampled else np.zeros((1, 1), int)
                                      for i in range(3))
        mean_b = other[seeds_b[:, :, None], problems[:, None, :]].mean(axis=(1, 2))
        mean_a = baseline[seeds_a[:, :, None], problems[:, None, :]].mean(axis=(1, 2))
        return mean_b - mean_a

    from scipy import stats

    result = stats.bootstrap([np.arange(sizes[i]) for i in resampled], gap, n_resamples=RESAMPLES,
                             confidence_level=LEVEL, method="percentile", vectorized=True, batch=200,
                             rng=np.random.default_rng(seed))
    low, high = (float(v) for v in result.confidence_interval)
    return {"difference": float(other.mean() - baseline.mean()), "low": low, "high": high,
            "real": bool(low > 0 or high < 0)}
