"""The comparison report: table columns, breakdown tables and figures from hand-made metrics."""

import pandas as pd
from helpers import PROJECT

from pipeline.config import load_params
from pipeline.figures import write_figures
from pipeline.report import comparison_table, plot_tables

PARAMS = load_params(PROJECT / "params.yaml")


def metrics(exact: float, breakdown: dict | None = None) -> dict:
    return {"exact_match": exact, "char_accuracy": 0.9, "train_seconds": 12.5, "parameters": 1234, "test_size": 100,
            "overlap_test": 0.0, "breakdown": breakdown or {}}


OPS = {"operation": {"add": {"count": 5, "exact_match": 1.0}, "mul": {"count": 5, "exact_match": 0.25}},
       "terms": {"2": {"count": 10, "exact_match": 0.6}}}
ROWS = {"add2-seq2seq-onehot": metrics(0.5), "ops-transformer": metrics(0.6, OPS),
        "mapping-naive_mlp": {"rmse": 0.0, "exact_match": 1.0}}


def test_framing():
    assert PARAMS.experiment("add2-seq2seq-onehot").framing == "onehot"
    assert PARAMS.experiment("add2-seq2seq-integer").framing == "integer"
    assert PARAMS.experiment("add2-seq2seq-reversed").framing == "onehot, reversed"
    assert PARAMS.experiment("mapping-naive_mlp").framing == "numbers"
    exp = PARAMS.experiment("add2-seq2seq-onehot").model_copy(update={"padding": "per_term", "mask": True})
    assert exp.framing == "onehot, per-term padding, masked"


def test_table_rows_and_breakdowns():
    table = comparison_table(PARAMS, ROWS)
    assert ("| experiment | task | model | encoding | exact match | char accuracy | RMSE | train s | parameters |"
            in table)
    assert "| add2-seq2seq-onehot | add2 | seq2seq | onehot | 50.00% | 90.00% | – | 12.5 | 1,234 | 100 | 0% |" in table
    assert "| mapping-naive_mlp | mapping | naive_mlp | numbers | 100.00% | – | 0.000 |" in table
    # only breakdowns with two or more groups get a table
    assert ("## Exact match by operation\n\n| experiment | add | mul |\n|---|---|---|\n"
            "| ops-transformer | 100.0% | 25.0% |") in table
    assert "by number of terms" not in table


def test_figures(tmp_path):
    curves = {name: pd.DataFrame({"epoch": [1, 2, 3], "val_exact_match": [0.1, 0.5, 0.9], "seconds": [1.0, 2.0, 3.0]})
              for name in ROWS}
    written = write_figures(ROWS, curves, tmp_path / "figures")
    assert [p.name for p in written] == ["accuracy_vs_epoch.png", "breakdown_operation.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plot_tables_put_every_experiment_on_one_chart():
    curves = {name: pd.DataFrame({"epoch": [1, 2], "val_exact_match": [0.1, 0.5]}) for name in ROWS}
    brackets = metrics(0.3, {"operation": {"add": OPS["operation"]["add"], "mixed": OPS["operation"]["add"]}})
    tasks = {"ops-transformer": "ops", "brackets-transformer": "brackets"}
    tables = plot_tables({**ROWS, "brackets-transformer": brackets}, curves, tasks)
    assert set(tables) == {"curves", "breakdown/operation"}  # one group of terms: no chart
    assert list(tables["curves"].columns) == ["experiment", "epoch", "val_exact_match"]
    assert len(tables["curves"]) == 2 * len(ROWS)
    operation = tables["breakdown/operation"]
    # Groups in their natural order; a group an experiment lacks is left out, not shown as 0.
    assert operation.to_dict("records") == [
        {"experiment": "ops-transformer", "task": "ops", "group": "add", "exact_match": 1.0},
        {"experiment": "brackets-transformer", "task": "brackets", "group": "add", "exact_match": 1.0},
        {"experiment": "brackets-transformer", "task": "brackets", "group": "mixed", "exact_match": 1.0},
        {"experiment": "ops-transformer", "task": "ops", "group": "mul", "exact_match": 0.25}]


def test_step_breakdowns_show_shares_of_first_wrong_steps_and_keep_a_single_kind():
    steps = {"first_wrong_step": {"2": {"count": 1, "exact_match": 0.0}, "answer": {"count": 3, "exact_match": 0.0},
                                  "none": {"count": 6, "exact_match": 1.0}},
             "step_kind": {"partial_products": {"count": 4, "exact_match": 0.75}}}
    table = comparison_table(PARAMS, {"ops-transformer": metrics(0.6, steps)})
    assert "## Share of problems by first wrong step" in table
    assert "| experiment | 2 | answer | none |\n|---|---|---|---|\n| ops-transformer | 10.0% | 30.0% | 60.0% |" in table
    assert "| ops-transformer | 75.0% |" in table  # one kind of step is not the overall figure
    curves = {"ops-transformer": pd.DataFrame({"epoch": [1], "val_exact_match": [0.6]})}
    tables = plot_tables({"ops-transformer": metrics(0.6, steps)}, curves, {"ops-transformer": "ops"})
    assert tables["shares/first_wrong_step"]["share"].tolist() == [0.1, 0.3, 0.6]  # a chart of its own
    assert "breakdown/first_wrong_step" not in tables
    assert tables["breakdown/step_kind"]["exact_match"].tolist() == [0.75]
