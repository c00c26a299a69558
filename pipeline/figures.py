"""The figures of one experiment or of all: learning curves and a heatmap per breakdown, as PNG files that
the report and each experiment's MLflow run hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.breakdown import BREAKDOWNS, SHARES, TITLES, breakdown_frame, figure_name
from pipeline.stats import aggregate


def plot_curves(curves: dict[str, pd.DataFrame], path: Path) -> Path:
    """Held-out exact match against epoch and against training seconds, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6), sharey=True, layout="constrained")
    tab20 = plt.get_cmap("tab20").colors
    colours = tab20[::2] + tab20[1::2]  # ten distinct hues first, then their lighter shades
    for i, (name, frame) in enumerate(curves.items()):
        style = dict(color=colours[i % len(colours)], linestyle="-" if i < len(colours) else "--", linewidth=1.6,
                     label=name)
        axes[0].plot(frame["epoch"], frame["val_exact_match"], **style)
        if "seconds" in frame:
            axes[1].plot(frame["seconds"], frame["val_exact_match"], **style)
    for ax, xlabel in zip(axes, ("epoch", "training seconds")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("exact match on the validation split")
    axes[0].set_title("Accuracy vs epoch")
    axes[1].set_title("Accuracy vs training time")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=9, frameon=False)
    return save(fig, path)


def plot_breakdown(name: str, metrics: dict[str, dict], path: Path) -> Path | None:
    """A heatmap of exact match (or share, see SHARES): experiments down, the breakdown's groups across,
    each cell labelled."""
    frame = breakdown_frame(name, metrics)
    if frame.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = (2.5 + 0.9 * len(frame.columns) + 2.5, 1.2 + 0.45 * len(frame))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    cmap = "Blues" if name in SHARES else "RdYlGn"  # a share is neither good nor bad
    image = ax.imshow(frame.to_numpy(dtype=float), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(frame.columns)), frame.columns)
    ax.set_yticks(range(len(frame)), frame.index)
    for (row, column), value in np.ndenumerate(frame.to_numpy(dtype=float)):
        # White text reads better on the dark cells.
        dark = not np.isnan(value) and (value > 0.5 if name in SHARES else not 0.15 < value < 0.85)
        ax.text(column, row, "–" if np.isnan(value) else f"{value:.1%}", ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_xlabel(TITLES[name])
    ax.set_title(f"Test {figure_name(name)}")
    fig.colorbar(image, ax=ax, format=lambda v, _: f"{v:.0%}", shrink=0.8)
    return save(fig, path)


def plot_studies(points: pd.DataFrame, path: Path) -> Path | None:
    """A panel per study: each arm's exact match over seeds, a dot per seed, its mean with the 95% t interval
    of the mean (the report's sentence gives the bootstrap interval of the difference)."""
    if points.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(points["study"]))
    fig, axes = plt.subplots(1, len(studies), figsize=(3.2 * len(studies) + 1, 4.2), sharey=True,
                             layout="constrained", squeeze=False)
    jitter = np.random.default_rng(0)  # spreads dots of equal value; fixed, so the figure is reproducible
    for ax, study in zip(axes[0], studies):
        arms = list(dict.fromkeys(points.loc[points["study"] == study, "experiment"]))
        for x, arm in enumerate(arms):
            values = points.loc[(points["study"] == study) & (points["experiment"] == arm), "exact_match"]
            ax.scatter(x + jitter.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.6, color="tab:blue")
            spread = aggregate(values.tolist())
            ax.errorbar(x + 0.3, spread["mean"], yerr=[[spread["mean"] - spread["low"]],
                                                      [spread["high"] - spread["mean"]]],
                        fmt="o", color="black", capsize=4)
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
        ax.set_title(study, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test exact match")
    fig.suptitle("Each study's arms: a dot per seed, the mean with its 95% t interval (black)", fontsize=10)
    return save(fig, path)


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_figures(metrics: dict[str, dict], curves: dict[str, pd.DataFrame], folder: Path,
                  studies: pd.DataFrame | None = None) -> list[Path]:
    """folder/: accuracy_vs_epoch.png, breakdown_<name>.png and, given the studies' points, studies.png;
    returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    written = [plot_curves(curves, folder / "accuracy_vs_epoch.png")]
    written += [plot_breakdown(name, metrics, folder / f"breakdown_{name}.png") for name in BREAKDOWNS]
    if studies is not None:
        written.append(plot_studies(studies, folder / "studies.png"))
    return [path for path in written if path is not None]
