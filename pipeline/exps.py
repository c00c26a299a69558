"""`adder exps` (`make exps`): DVC's experiments as one table of what they changed: the params whose values
differ between its rows, and the exact match of each experiment those params feed.

`dvc exp show --only-changed` keeps every column whose values differ, and a run on another CPU than the
committed one's rounds differently, so most exact matches differ a little: they crowd the one real change off
a 120-column terminal. Here a figure is shown because its experiment's params changed, not because it moved,
under short headers.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.retrain import dvc_json


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"experiments": {"a": {"epochs": 3}}} -> {"experiments.a.epochs": 3}; lists are values."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def params_of(data: dict) -> dict[str, object]:
    """A row's params.yaml, flattened ({} where DVC has none, e.g. a failed experiment)."""
    return flat((((data.get("params") or {}).get("params.yaml") or {}).get("data")) or {})


def labelled(shown: list[dict]) -> list[tuple[str, dict]]:
    """(label, data) for the workspace, each baseline commit and, under it, each of its experiments."""
    found = []
    for branch in shown:
        label = branch.get("name") or branch.get("rev", "")
        found.append((label if branch.get("rev") == "workspace" else f"{label} ({branch.get('rev', '')[:7]})",
                      branch.get("data") or {}))
        for exp in branch.get("experiments") or []:
            for rev in exp.get("revs") or []:
                found.append((f"└── {exp.get('name') or rev.get('name') or ''} ({rev.get('rev', '')[:7]})",
                              rev.get("data") or {}))
    return found


def changed_params(table: list[dict[str, object]]) -> list[str]:
    """The params whose value is not the same in every row (missing counts as a value)."""
    keys = sorted({key for row in table for key in row})
    return [key for key in keys if len({json.dumps(row.get(key), sort_keys=True) for row in table}) > 1]


def fed_by(changed: list[str], table: list[dict[str, object]]) -> list[str]:
    """The experiments whose results the changed params feed: experiments.<name>.* its own; tasks.<task>.*
    every experiment on that task; anything else (the seed, the backend) every experiment."""
    experiments = {key.split(".")[1] for row in table for key in row if key.startswith("experiments.")}
    task_of = {name: row[f"experiments.{name}.task"] for row in table for name in experiments
               if f"experiments.{name}.task" in row}
    fed = set()
    for key in changed:
        parts = key.split(".")
        if parts[0] == "experiments" and len(parts) > 2:
            fed.add(parts[1])
        elif parts[0] == "tasks" and len(parts) > 2:
            fed.update(name for name, task in task_of.items() if task == parts[1])
        else:
            fed.update(experiments)
    return sorted(fed)


def exact_match(data: dict, experiment: str) -> str:
    """The row's exact match of experiment, to 4 places, or '-'."""
    figures = ((data.get("metrics") or {}).get(f"metrics/{experiment}.json") or {}).get("data") or {}
    value = figures.get("exact_match")
    return "-" if value is None else f"{value:.4f}"


NOTHING_CHANGED = ("no experiment here changes a param (`dvc exp run -S key=value` makes one); every experiment's "
                   "figures: dvc metrics show")


def render(shown: list[dict]):
    """The table: an experiment's name, then the changed params, then the exact match of the experiments they
    feed; NOTHING_CHANGED where no param differs between the rows."""
    from rich.table import Table

    rows = labelled(shown)
    table = [params for _, data in rows if (params := params_of(data))]
    changed = changed_params(table)
    if not changed:
        return NOTHING_CHANGED
    out = Table(box=None, header_style="bold", pad_edge=False)
    out.add_column("Experiment", no_wrap=True)
    for key in changed:
        out.add_column(key.removeprefix("experiments."), justify="right", overflow="fold")
    fed = fed_by(changed, table)
    for name in fed:
        out.add_column(f"{name} exact match", justify="right", overflow="fold")
    for label, data in rows:
        params = params_of(data)
        out.add_row(label, *(json.dumps(params[key]) if key in params else "-" for key in changed),
                    *(exact_match(data, name) for name in fed))
    return out


def command() -> None:
    """Prints the table of DVC's experiments in this project."""
    from rich.console import Console

    Console().print(render(dvc_json(Path.cwd(), "exp", "show") or []))
