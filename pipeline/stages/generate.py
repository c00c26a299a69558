"""The generate stage: data/<task>/{train,val,test}.csv and summary.json."""

from __future__ import annotations

import mlflow

from pipeline import problems, tracking
from pipeline.command import arguments, run_command
from pipeline.config import load_params, project_root
from pipeline.stages.files import write_json


def generate(task_name: str) -> dict:
    """data/<task>/{train,val,test}.csv and summary.json; logs sizes and digests to MLflow."""
    root, params = project_root(), load_params()
    task = params.task(task_name)
    tracking.connect(root, tracking.DATASETS)
    splits = problems.split_problems(task, params.seed)
    folder = root / "data" / task_name
    summary = {
        "distinct_problems": task.space_size,
        "disjoint": task.disjoint,
        "overlap_val": problems.overlap(splits["train"], splits["val"]),
        "overlap_test": problems.overlap(splits["train"], splits["test"]),
        "splits": {},
    }
    for split in problems.SPLITS:
        digest = problems.write_csv(splits[split], folder / f"{split}.csv")
        summary["splits"][split] = {"size": len(splits[split]), "sha256": digest}
    write_json(summary, folder / "summary.json")
    splits = ("disjoint train, val and test splits" if task.disjoint
              else "train, val and test splits drawn with replacement")
    note = f"Problems of `{task_name}`: {tracking.task_words(task)}, in {splits}."
    tags = tracking.run_tags(root, task=task_name, **{tracking.NOTE: note})
    with mlflow.start_run(run_name=tracking.run_name(f"generate-{task_name}"), tags=tags):
        mlflow.log_params({"task": task_name, "seed": params.seed, **task.model_dump()})
        mlflow.log_metrics({"distinct_problems": task.space_size, "overlap_test": summary["overlap_test"],
                            **{f"{s}_size": v["size"] for s, v in summary["splits"].items()}})
        mlflow.log_dict(summary, "summary.json")
    return summary


def command(task_name: str) -> None:
    """`adder generate TASK`: the stage, and a line saying what it wrote."""
    summary = generate(task_name)
    sizes = ", ".join(f"{s} {v['size']:,}" for s, v in summary["splits"].items())
    print(f"{task_name}: {sizes} of {summary['distinct_problems']:,} distinct problems; "
          f"test seen in training: {summary['overlap_test']:.0%}")


def main() -> None:
    """`python3 -m pipeline.stages.generate TASK`, what dvc.yaml runs."""
    run_command(lambda: command(*arguments("python3 -m pipeline.stages.generate TASK", 1, 1)), __spec__.name)


if __name__ == "__main__":
    main()
