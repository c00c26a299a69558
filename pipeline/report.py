"""The comparison of all experiments: a markdown table, breakdown tables, and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.breakdown import BREAKDOWNS, SHARES, group_figures, group_order
from pipeline.config import Params
from pipeline.studies import seeds_section, studies_section

COLUMNS = ("experiment", "task", "model", "encoding", "exact match", "char accuracy", "RMSE", "train s", "parameters",
           "test problems", "test seen in training")
TITLES = {"terms": "number of terms", "digits": "digits of the longest operand", "operation": "operation",
          "brackets": "brackets", "carries": "carries (sums) or borrows (one subtraction)",
          "answer_length": "answer length (characters)",
          "first_wrong_step": "first wrong step (answer: only the final answer wrong; none: all right)",
          "first_wrong_kind": "kind of the first wrong step (answer: only the final answer wrong; none: all "
                              "right)",
          "step_kind": "kind of worked step (steps written right)"}
# A single group of these does not repeat the overall figure.
STEP_BREAKDOWNS = {"first_wrong_step", "first_wrong_kind", "step_kind"}


def figure_name(name: str) -> str:
    return f"{'share of problems' if name in SHARES else 'exact match'} by {TITLES[name]}"


def cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def comparison_table(params: Params, metrics: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, m in metrics.items():
        exp = params.experiments[name]
        lines.append("| " + " | ".join([
            name, exp.task, exp.model, exp.framing,
            cell(m.get("exact_match"), ".2%"), cell(m.get("char_accuracy"), ".2%"), cell(m.get("rmse"), ".3f"),
            cell(m.get("train_seconds"), ".1f"), cell(m.get("parameters"), ","), cell(m.get("test_size"), ","),
            cell(m.get("overlap_test"), ".0%"),
        ]) + " |")
    sections = [breakdown_table(name, metrics) for name in BREAKDOWNS]
    return ("# Experiments\n\nExact match: the whole answer right, on the test split (the mean over seeds where an "
            "experiment has several).\n\n" + "\n".join(lines) + "\n" + devices_line(metrics)
            + held_out_section(params, metrics)
            + studies_section(params, metrics) + seeds_section(params, metrics)
            + "".join(section for section in sections if section))


def devices_line(metrics: dict[str, dict]) -> str:
    """Which device the train seconds come from: one line naming each device and its experiments."""
    trained_on: dict[str, list[str]] = {}
    for name, m in metrics.items():
        trained_on.setdefault(m.get("device", "unknown"), []).append(name)
    if len(trained_on) == 1:
        return f"\nTrained on {next(iter(trained_on))} (train s).\n"
    return "\nTrained on " + "; ".join(f"{device}: {', '.join(names)}" for device, names in trained_on.items()) + ".\n"


def held_out_section(params: Params, metrics: dict[str, dict]) -> str:
    """Each experiment scored on tasks it never trained on (eval_tasks), beside its own test split."""
    rows = [(name, exp, task, m["held_out"][task]) for name, m in metrics.items()
            for exp in [params.experiments[name]] for task in m.get("held_out", {})]
    if not rows:
        return ""
    lines = ["| experiment | framing | trained on | exact match there | scored on | exact match | readable | "
             "seen in training | most often first wrong |", "|" + "---|" * 9]
    for name, exp, task, held in rows:
        wrong = {g: c["count"] for g, c in held["breakdown"].get("first_wrong_kind", {}).items() if g != "none"}
        lines.append(f"| {name} | {exp.framing} | {exp.task} | {cell(metrics[name].get('exact_match'), '.1%')} | "
                     f"{task} | {cell(held['exact_match'], '.1%')} | {cell(held['readable'], '.0%')} | "
                     f"{cell(held['overlap_train'], '.0%')} | {max(wrong, key=wrong.get) if wrong else '–'} |")
    return ("\n## Tasks never trained on\n\nEach model scored, untrained, on another task's test split: a problem "
            "it cannot read (longer than its input, or with symbols it has no code for) counts as wrong.\n\n"
            + "\n".join(lines) + "\n")


def breakdown_frame(name: str, metrics: dict[str, dict]) -> pd.DataFrame:
    """Exact match (each group's share of the problems, for SHARES) per experiment (rows) and group
    (columns) of one breakdown; outside the step breakdowns only experiments with two or more groups,
    since one repeats the overall figure."""
    rows = {exp: group_figures(name, m.get("breakdown", {}).get(name, {})) for exp, m in metrics.items()}
    fewest = 1 if name in STEP_BREAKDOWNS else 2
    frame = pd.DataFrame.from_dict({exp: groups for exp, groups in rows.items() if len(groups) >= fewest},
                                   orient="index")
    return frame[sorted(frame.columns, key=group_order)]


def breakdown_table(name: str, metrics: dict[str, dict]) -> str:
    frame = breakdown_frame(name, metrics)
    if frame.empty:
        return ""
    header = "| experiment | " + " | ".join(frame.columns) + " |\n|" + "---|" * (len(frame.columns) + 1) + "\n"
    body = "".join("| " + " | ".join([exp, *(cell(None if pd.isna(v) else v, ".1%") for v in row)]) + " |\n"
                   for exp, row in frame.iterrows())
    return f"\n## {figure_name(name).capitalize()}\n\n{header}{body}"


def plot_tables(metrics: dict[str, dict], curves: dict[str, pd.DataFrame],
                tasks: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The DVC plots' data in long form, one row per experiment and point, so one chart shows every
    experiment: "curves" (held-out exact match per epoch), "breakdown/<name>" (exact match per group) and,
    for the breakdowns in SHARES, "shares/<name>" (each group's share of the problems), these two with each
    experiment's task (tasks: experiment -> task), which the charts draw apart."""
    tables = {"curves": pd.concat([frame.assign(experiment=name)[["experiment", *frame.columns]]
                                   for name, frame in curves.items()], ignore_index=True)}
    for name in BREAKDOWNS:
        shares = name in SHARES
        frame = breakdown_frame(name, metrics)
        if not frame.empty:
            long = frame.rename_axis("experiment").reset_index().melt(
                "experiment", var_name="group", value_name="share" if shares else "exact_match")
            long.insert(1, "task", long["experiment"].map(tasks))
            tables[f"{'shares' if shares else 'breakdown'}/{name}"] = long.dropna()  # groups a task lacks
    return tables


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
