"""How every `adder` command and DVC stage runs: a user-facing error is one line on stderr and exit code 2,
Ctrl-C or SIGTERM an interruption (exit 130, its MLflow run marked KILLED), and with ADDER_WARM=1 the
command runs in a fork of the warm process instead (pipeline/warm.py), which computes the same."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable

from pipeline.errors import AdderError

# Keep TensorFlow's C++ start-up chatter and MLflow's schema hints off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr holds errors only
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # its model-logging notices are not for users
warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt  # so that SIGTERM ends a command as Ctrl-C does: its MLflow run marked KILLED


def run_command(body: Callable[[], object], entry: str) -> None:
    """Runs body as the command of module `entry` (what a warm fork imports to run it); exits on failure."""
    hand_off(sys.argv, entry)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        body()
    except AdderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def hand_off(argv: list[str], entry: str) -> None:
    """Runs the command of module `entry` in a fork of the warm process where one serves or starts, and exits
    with its status; returns where the command is to run in this process."""
    from pipeline import warm  # a hand-off to a process that runs this same entry, not the command's code

    if warm.wanted(argv, entry) and (status := warm.run(argv, entry)) is not None:
        sys.exit(status)


def arguments(usage: str, fewest: int, most: int | None) -> list[str]:
    """sys.argv's arguments, between fewest and most of them (None: no limit), else AdderError with usage."""
    given = sys.argv[1:]
    if len(given) < fewest or (most is not None and len(given) > most) or any(a.startswith("-") for a in given):
        raise AdderError(f"usage: {usage}")
    return given
