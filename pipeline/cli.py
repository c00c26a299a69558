"""The `adder` command line: one command per pipeline stage, plus predict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import AdderError

app = typer.Typer(help="Teach neural networks arithmetic from character strings.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.command()
def generate(task: str) -> None:
    """Generate the train / val / test problems of TASK under data/TASK/."""
    from pipeline.stages.generate import command

    command(task)


@app.command()
def train(experiment: str) -> None:
    """Train EXPERIMENT into models/EXPERIMENT/, tracked as one MLflow run."""
    from pipeline.stages.train import command

    command(experiment)


@app.command()
def evaluate(
    experiments: Annotated[list[str] | None, typer.Argument(help="[default: every experiment]")] = None,
) -> None:
    """Score EXPERIMENTS on their test splits into metrics/EXPERIMENT.json, Keras loaded once."""
    from pipeline.stages.evaluate import command

    command(experiments)


@app.command()
def compare() -> None:
    """Write reports/comparison.md comparing every experiment."""
    from pipeline.stages.compare import command

    command()


@app.command()
def exps() -> None:
    """DVC's experiments: the params that differ between them and the exact match of the experiments they feed."""
    from pipeline.exps import command

    command()


@app.command()
def sweep(
    experiment: str,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", "-S", help="key=v1,v2 (a grid axis), key=1..20 (whole numbers; seed=1..20 trains under each "
                            "seed), key=low:high[:log] (a range to search, with --trials)")] = None,
    trials: Annotated[int | None, typer.Option(help="draw this many trials from the settings by Optuna's TPE "
                                                    "[default: every combination, a grid]")] = None,
    address: Annotated[str | None, typer.Option(help="a Ray cluster's head, host:port [default: $RAY_ADDRESS, "
                                                     "else Ray in this process]")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs a trial holds on its node")] = 1.0,
    apply: Annotated[bool, typer.Option("--apply", help="then run the best trial as a DVC experiment")] = False,
) -> None:
    """Train and score EXPERIMENT under each setting as Ray tasks, each trial an MLflow child run of one sweep
    run (experiment adder-sweeps); prints the trials, best on validation first, each with its `dvc exp run`."""
    from pipeline.sweep import sweep as run_sweep

    run_sweep(experiment, setting or [], trials, address, cpus_per_trial, apply)


@app.command()
def study(
    names: Annotated[list[str], typer.Argument(help="studies of params.yaml; those sharing a baseline share its "
                                                    "trials")],
    half_width: Annotated[float, typer.Option(help="the widest 95% interval each question may have, "
                                                   "in points of exact match")] = 5.0,
    pilot: Annotated[int, typer.Option(help="seeds per arm before sizing the arms from their spread")] = 10,
    max_seeds: Annotated[int, typer.Option(help="the most seeds any arm trains under")] = 200,
    address: Annotated[str | None, typer.Option(help="a Ray cluster's head, host:port [default: $RAY_ADDRESS, "
                                                     "else Ray in this process]")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs a trial holds on its node")] = 1.0,
) -> None:
    """Run studies of params.yaml as one sweep over seeds, with as many seeds per arm as their questions need
    for every 95% interval to be at most ±HALF_WIDTH points; writes reports/studies/<names>.md."""
    from pipeline.powered import study as run_study

    out = run_study(names, half_width, pilot, max_seeds, address, cpus_per_trial)
    typer.echo(f"wrote {out}")


@app.command()
def predict(
    expression: Annotated[str | None, typer.Argument(help="e.g. 12+50")] = None,
    model: Annotated[str | None, typer.Option(help="experiment, task (its models), model folder or MLflow model "
                                                      "URI; without it, each line goes to the best trained "
                                                      "sequence model that accepts it")] = None,
    file: Annotated[str | None, typer.Option("--file", "-f", help="one expression per line; '-' for stdin")] = None,
    steps: Annotated[bool, typer.Option("--steps", help="the model's worked steps under each answer "
                                                       "(a model trained with answer: steps or rewrite)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="say on stderr which model answered each "
                                                                 "line")] = False,
) -> None:
    """Answer an expression, or every line of --file, with a trained model: one output line per input line."""
    from pipeline.config import project_root
    from pipeline.predict import load_predictors

    if (expression is None) == (file is None):
        raise AdderError("give one EXPRESSION or --file (not both)")
    lines = [expression] if file is None else read_lines(file)
    if not lines:
        return
    predictors = load_predictors(project_root(), model, steps)
    if steps and not all(member.codec.writes_steps for member in predictors.members):
        raise AdderError(f"--steps: {predictors.members[0].source} was trained without worked steps; "
                         "use a model trained with answer: steps or rewrite")
    routed = [line if isinstance(line, AdderError) else predictors.route(line) for line in lines]
    answers = answer_routed(routed, steps)
    bad = 0
    for number, item in enumerate(routed, 1):
        where = f"line {number}: " if file else ""
        if isinstance(item, AdderError):
            bad += 1
            typer.echo(f"error: {where}{item}", err=True)
        elif verbose:
            typer.echo(f"{where}answered by {Path(item[0].source).name}", err=True)
    if file is not None or not bad:
        # Bad lines answer with an empty line, so answers stay aligned with their expressions.
        sys.stdout.write("".join(f"{answer}\n" for answer in answers))
    if bad:
        raise typer.Exit(AdderError.exit_code)


def answer_routed(routed: list, steps: bool) -> list[str]:
    """Each routed line's answer ('' for a refused one), every model answering its lines in one batch."""
    answers = [""] * len(routed)
    groups: dict[int, list[int]] = {}
    for row, item in enumerate(routed):
        if not isinstance(item, AdderError):
            groups.setdefault(id(item[0]), []).append(row)
    for rows in groups.values():
        predictor, expressions = routed[rows[0]][0], [routed[row][1] for row in rows]
        for row, answer in zip(rows, predictor.answer(expressions, steps)):
            if isinstance(answer, AdderError):
                routed[row] = answer  # reported with the refused lines
            else:
                answers[row] = answer
    return answers


def read_lines(file: str) -> list[str | AdderError]:
    """The file's lines, split at '\n' alone (a '\r' before it dropped): other separators that
    str.splitlines honours stay inside their line, which then fails its check, so every output line
    answers the input line of the same number. A line that is not UTF-8 is an AdderError in its place."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as e:
        raise AdderError(f"cannot read {file}: {e.strerror}") from None
    if not data:
        return []
    return [decoded(line.removesuffix(b"\r")) for line in data.removesuffix(b"\n").split(b"\n")]


def decoded(line: bytes) -> str | AdderError:
    try:
        return line.decode()
    except UnicodeDecodeError as e:
        return AdderError(f"not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1})")


@app.command()
def serve(
    model: Annotated[str | None, typer.Argument(
        help="task, experiment or MLflow model URI [default: every task's champion, models:/adder-all@champion]",
    )] = None,
    model_option: Annotated[str | None, typer.Option("--model", help="the same as MODEL, as predict takes it")] = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 5001,
) -> None:
    """Serve MODEL over HTTP through `mlflow models serve`: POST /invocations {"inputs": ["12+50"]}."""
    from pipeline import registry, tracking
    from pipeline.config import project_root
    from pipeline.server import serve as serve_model

    if model is not None and model_option is not None and model != model_option:
        raise AdderError(f"give MODEL or --model, not both ({model!r} and {model_option!r})")
    root = project_root()
    tracking.connect(root)  # an unreachable tracking server fails here, in one line
    uri = registry.served_model_uri(root, model or model_option)
    typer.echo(f"serving {uri} at http://{host}:{port}/invocations")
    sys.stdout.flush()  # the process is replaced next
    serve_model(uri, host, port, tracking.tracking_uri(root))


@app.command("retrain-report")
def retrain_report(
    base: Annotated[str | None, typer.Option(
        help="git revision to compare with [default: the merge-base with origin/$GITHUB_BASE_REF or origin/main; "
             "HEAD~1 on main itself]",
    )] = None,
    out: Annotated[Path | None, typer.Option(help="markdown report [default: reports/retrain.md]")] = None,
    repro: Annotated[bool, typer.Option("--repro/--no-repro", help="run `dvc repro` first")] = True,
    promote: Annotated[bool, typer.Option(help="let champions move (CI: on the main branch only)")] = False,
) -> None:
    """Reproduce the pipeline, compare params and metrics with a base revision, write a markdown report
    (also to $GITHUB_STEP_SUMMARY when set). Without --promote, evaluate registers models but moves no champion."""
    from pipeline.config import project_root
    from pipeline.retrain import retrain_report as report

    root = project_root()
    out = out or root / "reports" / "retrain.md"
    c = report(root, base, out, run_repro=repro, promote=promote)
    typer.echo(f"wrote {out}: compared with {c.base_commit[:7]} ({c.base}), changed params: {len(c.params)}, "
               f"experiments with changed metrics: {len(c.metrics)}")


def main() -> None:
    from pipeline.command import run_command

    run_command(lambda: sys.exit(invoke()), "pipeline.cli")


def invoke() -> int:
    """Runs the app; a usage error (an unknown option, a missing value) is one line naming --help."""
    from typer.exceptions import TyperException

    try:
        code = app(prog_name="adder", standalone_mode=False)  # prog_name: not the module a warm fork runs under
    except TyperException as e:
        if not e.format_message():  # `adder` alone: the help was the answer
            return e.exit_code
        context = getattr(e, "ctx", None)
        usage = f" (usage: {context.command_path} --help)" if context is not None else ""
        raise AdderError(f"{e.format_message()}{usage}") from None
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
