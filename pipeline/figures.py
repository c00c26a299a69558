"""The figures of one experiment or of all: learning curves and a heatmap per breakdown, as PNG files that
the report and each experiment's MLflow run hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.breakdown import BREAKDOWNS, SHARES, TITLES, breakdown_frame, figure_name


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


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_figures(metrics: dict[str, dict], curves: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """reports/figures/: accuracy_vs_epoch.png and breakdown_<name>.png; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    written = [plot_curves(curves, folder / "accuracy_vs_epoch.png")]
    written += [plot_breakdown(name, metrics, folder / f"breakdown_{name}.png") for name in BREAKDOWNS]
    return [path for path in written if path is not None]
