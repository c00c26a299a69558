"""An experiment trained under several seeds: the seed that is served, and the figures over seeds.

models/<experiment>/seeds/<seed>/ holds each seed's model folder; models/<experiment>/ itself holds a copy
of the chosen seed's, so that evaluate, predict and serve load it as they load any experiment. The chosen
seed is the one with the highest exact match on the validation split (never the test split), the
earliest listed on a tie. Each seed is a child MLflow run of the experiment's parent run."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from pipeline import model_folder, tracking
from pipeline.stats import aggregate

SEEDS = "seeds"  # models/<experiment>/seeds/<seed>/


def seed_folder(folder: Path, seed: int) -> Path:
    return folder / SEEDS / str(seed)


def chosen_seed(val_exact_match: dict[int, float]) -> int:
    """The seed whose model scores highest on the validation split; the earliest listed on a tie."""
    return max(val_exact_match, key=lambda seed: (val_exact_match[seed], -list(val_exact_match).index(seed)))


def correct_text(predicted: np.ndarray, answers: np.ndarray) -> str:
    """Which test problems a model got right, as '0'/'1' per problem in test order (for the studies)."""
    return "".join(np.where(predicted == np.asarray(answers).astype(str), "1", "0"))


def per_seed(folder: Path, run: dict, seed: int, test, predicted: np.ndarray, figures: dict) -> list[dict]:
    """Each seed's test figures and the problems it got right: the chosen (or only) seed's from its
    predictions, every other seed's model loaded from its own folder."""
    from pipeline.evaluate import predict_answers, score
    from pipeline.model_folder import load_trained

    rows = []
    for each in run.get("seeds", [seed]):
        if each == run.get("chosen_seed", seed):
            got, scored = predicted, figures
        else:
            model, codec = load_trained(seed_folder(folder, each))
            got = predict_answers(model, codec, test.text)
            scored = score(got, test.answer, codec)
        rows.append({"seed": each, **{k: scored[k] for k in ("exact_match", "char_accuracy") if k in scored},
                     "correct": correct_text(got, test.answer)})
    return rows


def over_seeds(rows: list[dict]) -> dict[str, float]:
    """The headline figures of several seeds: exact match's mean, min, max and 95% interval (the mean
    also as exact_match, what `dvc exp show` lists), char accuracy's mean, and each seed's exact match."""
    spread = aggregate([row["exact_match"] for row in rows])
    figures = {"exact_match": spread["mean"], **{f"exact_match_{k}": spread[k] for k in ("min", "max", "low", "high")},
               **{f"exact_match_seed_{row['seed']}": row["exact_match"] for row in rows}}
    if all("char_accuracy" in row for row in rows):
        figures["char_accuracy"] = float(np.mean([row["char_accuracy"] for row in rows]))
    return figures


def log_seed_runs(folder: Path, run: dict, rows: list[dict], figures: dict) -> None:
    """Test figures on each other seed's child run (the chosen one has its own already) and the aggregate
    on the parent run, where the MLflow run table shows it beside the children."""
    for row in rows:
        if row["seed"] != run["chosen_seed"]:
            with tracking.resume_run(model_folder.verified(seed_folder(folder, row["seed"]))["run_id"]):
                mlflow.log_metrics({f"test_{k}": v for k, v in row.items() if k in ("exact_match", "char_accuracy")})
    with tracking.resume_run(run["parent_run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in figures.items()})
