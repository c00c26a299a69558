"""The README's results table says what the committed metrics say: every default experiment has a row,
and its exact match, char accuracy and RMSE are metrics/<experiment>.json's, to the digits shown."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from helpers import PROJECT

COLUMNS = {"exact match": "exact_match", "char accuracy": "char_accuracy", "RMSE": "rmse"}


def results_table() -> dict[str, dict[str, str]]:
    """{experiment: {column: cell}} from the table under README's `## Results`."""
    section = (PROJECT / "README.md").read_text().split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    table = section[section.index("\n|"):].split("\n\n", 1)[0]  # the section's first table
    lines = table.strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[cells["experiment"]] = cells
    return rows


def first_number(cell: str) -> tuple[float, int] | None:
    """The cell's leading figure and its decimals: '99.60% (2: 100%)' -> (99.6, 2); '–' -> None."""
    found = re.match(r"(\d+(?:\.(\d+))?)", cell)
    return (float(found[1]), len(found[2] or "")) if found else None


EXPERIMENTS = list(yaml.safe_load((PROJECT / "params.yaml").read_text())["experiments"])


def test_every_default_experiment_has_one_row():
    assert sorted(results_table()) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_row_shows_the_committed_metrics(experiment):
    metrics = json.loads((PROJECT / "metrics" / f"{experiment}.json").read_text())
    row = results_table()[experiment]
    for column, key in COLUMNS.items():
        shown = first_number(row[column])
        if shown is None:
            assert key not in metrics or column != "exact match", f"{experiment}: no {column} shown"
            continue
        value, decimals = shown
        scale = 1 if key == "rmse" else 100
        assert key in metrics, f"{experiment}: README shows {column} {row[column]!r}, metrics have no {key}"
        assert round(metrics[key] * scale, decimals) == pytest.approx(value), \
            f"{experiment}: README shows {column} {row[column]!r}, metrics/{experiment}.json has {metrics[key]}"
