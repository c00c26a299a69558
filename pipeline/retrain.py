"""`adder retrain-report`: what CI runs when params or code change. It reproduces the pipeline, compares
params and metrics with a base git revision (`dvc params diff`, `dvc metrics diff`), writes a markdown
report with the comparison plots, and on the main branch lets champions move."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import AdderError

# The branch pull requests are compared with when CI does not name one ($GITHUB_BASE_REF).
DEFAULT_BRANCH = "main"
# Rows of "other changed values" kept in the report: a PR comment holds at most 65,536 characters.
MAX_OTHER_ROWS = 150


# --------------------------------------------------------------------------------------------------
# git: which revision to compare with


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise AdderError("git is not installed; retrain-report compares with a git revision") from None


def commit_of(root: Path, rev: str) -> str | None:
    result = git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def resolve_base(root: Path, base: str | None) -> tuple[str, str]:
    """(commit, how it was chosen). Without `base`: the merge-base of HEAD with origin/<branch> (or the local
    <branch>), where <branch> is $GITHUB_BASE_REF or main; when that is HEAD itself (a push to main), HEAD~1."""
    if git(root, "rev-parse", "--git-dir").returncode != 0:
        raise AdderError(f"{root} is not in a git repository; retrain-report compares with a git revision")
    head = commit_of(root, "HEAD")
    if head is None:
        raise AdderError("the git repository has no commit yet; commit the project first")
    if base is not None:
        if (commit := commit_of(root, base)) is None:
            raise AdderError(f"base revision {base!r} not found; fetch it (in CI: actions/checkout with "
                             "fetch-depth: 0) or name another with --base")
        return commit, base
    branch = os.environ.get("GITHUB_BASE_REF") or DEFAULT_BRANCH
    for ref in (f"origin/{branch}", branch):
        if commit_of(root, ref) is None:
            continue
        merge_base = git(root, "merge-base", "HEAD", ref).stdout.strip()
        if merge_base and merge_base != head:
            return merge_base, f"merge-base with {ref}"
        break
    if (parent := commit_of(root, "HEAD~1")) is None:
        raise AdderError(f"no base revision: HEAD has no parent and no {branch} branch to compare with; "
                         "name one with --base")
    return parent, "HEAD~1"


# --------------------------------------------------------------------------------------------------
# dvc: reproduce, then diff with the base


def dvc_command() -> str:
    """The dvc installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else "dvc"


def venv_env() -> dict[str, str]:
    """dvc.yaml's commands call `adder`: the venv comes first on PATH even when it is not activated."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def stage_env(promote: bool) -> dict[str, str]:
    """ADDER_PROMOTE tells evaluate whether it may move champions (pipeline.registry.promotion_on)."""
    return dict(venv_env(), ADDER_PROMOTE="1" if promote else "0")


def repro(root: Path, promote: bool) -> None:
    """`dvc repro`, its output going straight to the terminal (CI logs show each stage as it runs)."""
    try:
        code = subprocess.run([dvc_command(), "repro"], cwd=root, env=stage_env(promote)).returncode
    except FileNotFoundError:
        raise AdderError("dvc is not installed; run `make setup`") from None
    if code != 0:
        raise AdderError(f"dvc repro failed (exit {code}); its output is above")


def dvc_json(root: Path, *args: str):
    """`dvc <args> --json` run in root, parsed; AdderError with DVC's first error line when it fails."""
    try:
        result = subprocess.run([dvc_command(), *args, "--json"], cwd=root, capture_output=True, text=True,
                                env=venv_env())
    except FileNotFoundError:
        raise AdderError("dvc is not installed; run `make setup`") from None
    errors = [line.removeprefix("ERROR: ") for line in result.stderr.splitlines() if line.startswith("ERROR")]
    if result.returncode != 0:
        raise AdderError(f"dvc {' '.join(args)} failed: {errors[0] if errors else f'exit {result.returncode}'}")
    return json.loads(result.stdout or "null")


def dvc_diff(root: Path, kind: str, base: str) -> dict:
    """`dvc <kind> diff <base> --json`: {file: {name: {"old": ..., "new": ..., "diff": ...}}}, base vs workspace."""
    return dvc_json(root, kind, "diff", base) or {}


def params_changes(diff: dict) -> dict[str, dict]:
    """{param: {"old", "new"}} over every params file; a file other than params.yaml prefixes its keys."""
    return {(name if file == "params.yaml" else f"{file}:{name}"): change
            for file, changes in diff.items() for name, change in changes.items()}


def metrics_changes(diff: dict) -> dict[str, dict[str, dict]]:
    """{experiment: {metric: {"old", "new"}}}: metrics/<experiment>.json named by its experiment."""
    grouped: dict[str, dict[str, dict]] = {}
    for file, changes in diff.items():
        path = Path(file)
        name = path.stem if path.parent.name == "metrics" else file
        grouped.setdefault(name, {}).update(changes)
    return grouped


# --------------------------------------------------------------------------------------------------
# the report: pure functions of the comparison


@dataclass
class Comparison:
    """Everything the report shows, gathered by retrain_report()."""

    base: str  # how the base was named: "HEAD~1", "merge-base with origin/main", a revision
    base_commit: str
    head_commit: str
    params: dict[str, dict]  # param -> {"old", "new"}
    metrics: dict[str, dict[str, dict]]  # experiment -> metric -> {"old", "new"}
    base_has_metrics: bool = True  # metrics/ committed at the base: else every old value is missing
    figures: list[str] = field(default_factory=list)  # paths relative to the report's folder
    table: str | None = None  # comparison.md, relative to the report's folder
    registry: list[dict] = field(default_factory=list)  # champion decisions (pipeline.registry.crown)
    promote: bool = False
    run_url: str | None = None  # the CI run whose artifacts hold the figures


HEADLINE = ("exact_match", "char_accuracy", "rmse")
LENGTH = re.compile(r"exact_match_\d+_digits")


def is_headline(metric: str) -> bool:
    return metric in HEADLINE or LENGTH.fullmatch(metric) is not None


def is_timing(metric: str) -> bool:
    """Wall-clock figures change on every run: they would bury the changes that matter."""
    last = metric.split(".")[-1]
    return last == "train_seconds" or last.startswith("seconds")


def is_fraction(metric: str) -> bool:
    last = metric.split(".")[-1]
    return last in ("exact_match", "char_accuracy", "overlap_test") or LENGTH.fullmatch(last) is not None


def metric_order(metric: str) -> tuple:
    """Headline metrics in reading order (exact match first), then the rest with numbers sorted as numbers."""
    rank = HEADLINE.index(metric) if metric in HEADLINE else len(HEADLINE)
    return rank, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", metric)]


def value_cell(metric: str, value) -> str:
    if value is None:
        return "–"
    if is_fraction(metric):
        return f"{value:.2%}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if metric == "rmse" else f"{value:.4g}"


def change_cell(metric: str, old, new) -> str:
    """The change, signed; for headline metrics also whether it is better (higher accuracy, lower RMSE)."""
    if old is None:
        return "new"
    if new is None:
        return "removed"
    delta = new - old
    text = f"{delta * 100:+.2f} pp" if is_fraction(metric) else f"{delta:+.4g}"
    if is_headline(metric) and delta:
        text += " (better)" if (delta < 0) == (metric == "rmse") else " (worse)"
    return text


def param_cell(value) -> str:
    if value is None:
        return "–"
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def params_section(c: Comparison) -> str:
    if not c.params:
        return "## Params\n\nNo params changed.\n"
    rows = "".join(f"| `{name}` | {param_cell(change.get('old'))} | {param_cell(change.get('new'))} |\n"
                   for name, change in sorted(c.params.items()))
    unset = any(None in (change.get("old"), change.get("new")) for change in c.params.values())
    return f"## Params\n\n| param | base | now |\n|---|---|---|\n{rows}" + ("\n– : not set.\n" if unset else "")


def metric_rows(c: Comparison, keep) -> list[str]:
    return [f"| {exp} | {metric} | {value_cell(metric, ch.get('old'))} | {value_cell(metric, ch.get('new'))} "
            f"| {change_cell(metric, ch.get('old'), ch.get('new'))} |"
            for exp, changes in sorted(c.metrics.items())
            for metric, ch in sorted(changes.items(), key=lambda item: metric_order(item[0])) if keep(metric)]


def metrics_section(c: Comparison) -> str:
    header = "| experiment | metric | base | now | change |\n|---|---|---|---|---|\n"
    headline = metric_rows(c, is_headline)
    other = metric_rows(c, lambda m: not is_headline(m) and not is_timing(m))
    if not headline and not other:
        return "## Metrics\n\nNo metric changed (timings aside).\n"
    text = "## Metrics\n\nTest metrics that changed; timings are left out.\n\n"
    text += (header + "\n".join(headline) + "\n") if headline else "No headline metric changed.\n"
    if not c.base_has_metrics:
        text += ("\nThe base revision has no committed metrics, so only today's values are shown: commit "
                 "`metrics/` with `dvc.lock` after `dvc repro`.\n")
    if other:
        more = len(other) - MAX_OTHER_ROWS
        text += (f"\n<details><summary>{len(other)} other changed values (breakdowns, sizes)</summary>\n\n"
                 + header + "\n".join(other[:MAX_OTHER_ROWS]) + "\n"
                 + (f"\n… and {more} more: `dvc metrics diff {c.base_commit[:7]}`\n" if more > 0 else "")
                 + "\n</details>\n")
    return text


def registry_section(c: Comparison) -> str:
    if not c.registry:
        return ""
    moved = ("Champions may move (`--promote`, the main branch)." if c.promote else
             "No champion moves without `--promote` (the main branch): a version that wins is `held`.")
    moved += " The latest decision for each sequence experiment:"
    rows = "".join(f"| {d['experiment']} | {d['model']} | {d['version']} | {d['decision']} | {d['reason']} "
                   f"| {value_cell('exact_match', as_number(d.get('candidate_exact_match')))} "
                   f"| {value_cell('exact_match', as_number(d.get('champion_exact_match')))} |\n" for d in c.registry)
    return (f"## Champions\n\n{moved}\n\n| experiment | registered model | version | decision | reason "
            f"| test exact match | champion's |\n|---|---|---|---|---|---|---|\n{rows}")


def as_number(value):
    return None if value in (None, "None") else float(value)


def figures_section(c: Comparison) -> str:
    if not c.figures:
        return ""
    if c.run_url:  # images beside the report do not render in a job summary or a PR comment
        names = ", ".join(f"`{Path(f).name}`" for f in c.figures)
        return (f"## Plots\n\nThe comparison plots ({names}) are in the `reports` artifact of "
                f"[this run]({c.run_url}), beside this report.\n")
    return "## Plots\n\n" + "\n".join(f"![{Path(f).stem}]({f})" for f in c.figures) + "\n"


def render(c: Comparison) -> str:
    n_params, n_exps = len(c.params), len(c.metrics)
    intro = (f"# Retraining report\n\nWorkspace at `{c.head_commit[:7]}` compared with `{c.base_commit[:7]}` "
             f"({c.base}): {n_params} param{'s' * (n_params != 1)} changed, metrics of {n_exps} "
             f"experiment{'s' * (n_exps != 1)} changed.")
    if c.table:
        intro += (" All experiments side by side: `comparison.md` in the run's `reports` artifact." if c.run_url
                  else f" All experiments side by side: [comparison.md]({c.table}).")
    intro += "\n"
    sections = [intro, params_section(c), metrics_section(c), registry_section(c), figures_section(c)]
    return "\n".join(section for section in sections if section)


# --------------------------------------------------------------------------------------------------
# the command


def figures(root: Path, out: Path) -> list[str]:
    """reports/figures/*.png written by the compare stage, relative to the report, accuracy curves first."""
    found = sorted((root / "reports" / "figures").glob("*.png"), key=lambda p: (p.stem != "accuracy_vs_epoch", p.name))
    return [os.path.relpath(path, out.parent) for path in found]


def table(root: Path, out: Path) -> str | None:
    path = root / "reports" / "comparison.md"
    return os.path.relpath(path, out.parent) if path.is_file() else None


def serving_runs(root: Path) -> dict[str, str]:
    """{run id: experiment} of today's trained experiments, of which evaluate registers the sequence models."""
    from pipeline.config import PARAMS_FILE, load_params

    runs = {}
    for name in load_params(root / PARAMS_FILE).experiments:
        path = root / "models" / name / "run.json"
        if path.is_file() and "run_id" in (info := json.loads(path.read_text())):
            runs[info["run_id"]] = name
    return runs


def champions(root: Path, promote: bool) -> list[dict]:
    """With promote, crowns what evaluate held back; then the decision of every registered experiment."""
    run_ids = serving_runs(root)
    if not run_ids:
        return []  # no MLflow import (seconds) when nothing was registered
    import mlflow

    from pipeline import registry, tracking

    tracking.connect(root)
    if promote and any(d["decision"] == "promoted" for d in registry.promote_held(list(run_ids))):
        from pipeline.config import PARAMS_FILE, load_params

        registry.publish_all_families(root, load_params(root / PARAMS_FILE).backend)  # adder-all: the new champions
    client = mlflow.MlflowClient()
    return [{"experiment": name, **d} for run_id, name in run_ids.items()
            if (d := registry.registry_decision(client, run_id))]


def github_run_url() -> str | None:
    parts = [os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    return f"{parts[0]}/{parts[1]}/actions/runs/{parts[2]}" if all(parts) else None


def retrain_report(root: Path, base: str | None, out: Path, run_repro: bool = True,
                   promote: bool = False) -> Comparison:
    """Runs the whole command; writes the report to `out` (and to $GITHUB_STEP_SUMMARY when set)."""
    base_commit, base_name = resolve_base(root, base)  # before the long repro: a bad base fails now
    if run_repro:
        repro(root, promote)
    comparison = Comparison(
        base=base_name, base_commit=base_commit, head_commit=commit_of(root, "HEAD"),
        params=params_changes(dvc_diff(root, "params", base_commit)),
        metrics=metrics_changes(dvc_diff(root, "metrics", base_commit)),
        base_has_metrics=bool(git(root, "ls-tree", "--name-only", base_commit, "--", "metrics/").stdout.strip()),
        figures=figures(root, out), table=table(root, out), registry=champions(root, promote), promote=promote,
        run_url=github_run_url())
    text = render(comparison)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a") as f:
            f.write(text + "\n")
    return comparison
