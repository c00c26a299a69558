"""The comparison of all experiments as one markdown table."""

from __future__ import annotations

from pipeline.config import Params

COLUMNS = ("experiment", "task", "model", "exact match", "char accuracy", "RMSE", "train s", "parameters", "test problems", "test seen in training")


def cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def comparison_table(params: Params, metrics: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, m in metrics.items():
        exp = params.experiments[name]
        lines.append("| " + " | ".join([
            name, exp.task, exp.model,
            cell(m.get("exact_match"), ".2%"), cell(m.get("char_accuracy"), ".2%"), cell(m.get("rmse"), ".3f"),
            cell(m.get("train_seconds"), ".1f"), cell(m.get("parameters"), ","), cell(m.get("test_size"), ","),
            cell(m.get("overlap_test"), ".0%"),
        ]) + " |")
    return "# Experiments\n\nExact match: the whole answer right, on the test split.\n\n" + "\n".join(lines) + "\n"
