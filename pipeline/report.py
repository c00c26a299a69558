"""The comparison of all experiments: a markdown table, breakdown tables, and the tables `dvc plots` draws."""

from __future__ import annotations

import pandas as pd

from pipeline.breakdown import BREAKDOWNS, SHARES, breakdown_frame, figure_name
from pipeline.config import Params
from pipeline.studies import Gaps, seeds_section, studies_section

COLUMNS = ("experiment", "task", "model", "encoding", "exact match", "char accuracy", "RMSE", "train s", "parameters",
           "test problems", "test seen in training")
def cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def comparison_table(params: Params, metrics: dict[str, dict], gaps: Gaps | None = None) -> str:
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
            + studies_section(params, metrics, gaps) + seeds_section(params, metrics)
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


def breakdown_table(name: str, metrics: dict[str, dict]) -> str:
    frame = breakdown_frame(name, metrics)
    if frame.empty:
        return ""
    header = "| experiment | " + " | ".join(frame.columns) + " |\n|" + "---|" * (len(frame.columns) + 1) + "\n"
    body = "".join("| " + " | ".join([exp, *(cell(None if pd.isna(v) else v, ".1%") for v in row)]) + " |\n"
                   for exp, row in frame.iterrows())
    return f"\n## {figure_name(name).capitalize()}\n\n{header}{body}"


def study_points(params: Params, metrics: dict[str, dict]) -> pd.DataFrame:
    """Every scored study's arms, a row per seed: study, experiment (baseline first), seed, exact match."""
    rows = [{"study": study, "experiment": name, "seed": seed["seed"], "exact_match": seed["exact_match"]}
            for study, names in params.studies.items() if all(name in metrics for name in names)
            for name in names for seed in metrics[name].get("per_seed", ())]
    return pd.DataFrame(rows, columns=["study", "experiment", "seed", "exact_match"])


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
