"""The compare stage: reports/comparison.md, its figures and the DVC plots, from every experiment's evaluation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric

from pipeline import tracking
from pipeline.command import arguments, run_command
from pipeline.config import load_params, project_root
from pipeline.errors import AdderError
from pipeline.figures import write_figures
from pipeline.report import comparison_table, plot_tables, study_points
from pipeline.studies import study_gaps, study_metrics


def compare() -> Path:
    """reports/comparison.md and reports/figures/ (logged to MLflow), and plots/ for `dvc plots`."""
    root, params = project_root(), load_params()
    results = {}
    for name in params.experiments:
        path = root / "evaluation" / f"{name}.json"
        if not path.is_file():
            raise AdderError(f"missing {path.relative_to(root)}; evaluate experiment {name!r} first")
        results[name] = json.loads(path.read_text())
    out = root / "reports" / "comparison.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    gaps = study_gaps(params, results)
    out.write_text(comparison_table(params, results, gaps))
    curves = {name: pd.DataFrame(result["history"]) for name, result in results.items()}
    studies = study_points(params, results)
    figures = write_figures(results, curves, root / "reports" / "figures", studies)
    tasks = {name: experiment.task for name, experiment in params.experiments.items()}
    tables = plot_tables(results, curves, tasks) | ({"studies": studies} if len(studies) else {})
    write_plot_tables(tables, root / "plots")
    tracking.connect(root, tracking.REPORTS)
    client, now = mlflow.MlflowClient(), int(time.time() * 1000)
    for name, verdict in study_metrics(gaps).items():  # each study's verdict on the run it judges
        if re.fullmatch(r"[0-9a-f]{32}", str(run_id := results[name].get("run_id"))):
            client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in verdict.items()])
    with mlflow.start_run(run_name=tracking.run_name("compare"), tags=tracking.run_tags(root)):
        mlflow.log_artifact(str(out))
        for figure in figures:
            mlflow.log_artifact(str(figure), "figures")
    return out


def write_plot_tables(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    """Each table as folder/<name>.csv, after removing the CSVs of a previous run (a breakdown may be gone)."""
    for stale in folder.rglob("*.csv"):
        stale.unlink()
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


def command() -> None:
    """`adder compare`: the stage, and where it wrote."""
    print(f"wrote {compare()}")


def main() -> None:
    """`python3 -m pipeline.stages.compare`, what dvc.yaml runs."""
    run_command(lambda: command(*arguments("python3 -m pipeline.stages.compare", 0, 0)), __spec__.name)


if __name__ == "__main__":
    main()
