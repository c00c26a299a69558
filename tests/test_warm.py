"""ADDER_WARM=1: commands run in forks of a warm server, with real processes (server, children, callers)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from test_e2e import TINY, cli_env, csv_without_timing, one_error_line, run, shown, write_params

EXPERIMENT = "seed-seq2seq"
PARAMS = {**TINY, "tasks": {"seed": TINY["tasks"]["seed"]}, "experiments": {EXPERIMENT: TINY["experiments"][EXPERIMENT]}}


@pytest.fixture
def warm_env():
    """The environment of a warm command, with its own socket folder (short: a socket's path has at most
    107 bytes); stops the servers it started."""
    sockets = tempfile.mkdtemp(prefix="adder-", dir="/tmp")
    yield {**cli_env(), "ADDER_WARM": "1", "TMPDIR": sockets}
    subprocess.run(["pkill", "-f", f"pipeline.warm {sockets}"])
    shutil.rmtree(sockets, ignore_errors=True)


def project(folder: Path) -> Path:
    folder.mkdir()
    write_params(folder, PARAMS)
    return folder


def processes(env: dict) -> list[int]:
    """The warm server and its children (forks, which show the server's command line), oldest first."""
    found = subprocess.run(["pgrep", "-f", f"pipeline.warm {env['TMPDIR']}"], capture_output=True, text=True)
    return sorted(filter(alive, map(int, found.stdout.split())),
                  key=lambda pid: int(Path(f"/proc/{pid}/stat").read_text().split()[21]))


def test_a_warm_command_computes_what_a_fresh_process_does(tmp_path, warm_env):
    fresh, warm = project(tmp_path / "fresh"), project(tmp_path / "warm")
    for folder, env in ((fresh, {**cli_env(), "ADDER_WARM": "0"}), (warm, warm_env), (warm, warm_env)):  # the second: a warm fork
        for command in (["adder", "generate", "seed"], ["adder", "train", EXPERIMENT]):
            result = run(command, folder, env)
            assert result.returncode == 0, shown(result)
        assert "trained in" in result.stdout
    assert len(processes(warm_env)) == 1  # one server, no child left behind
    for split in ("train", "val", "test"):
        assert (fresh / "data" / "seed" / f"{split}.csv").read_bytes() == (warm / "data" / "seed" / f"{split}.csv").read_bytes()
    history = Path("models", EXPERIMENT, "history.csv")
    assert csv_without_timing(fresh / history) == csv_without_timing(warm / history)


def test_a_warm_command_keeps_the_exit_status_and_one_line_error(tmp_path, warm_env):
    folder = project(tmp_path / "p")
    assert "unknown experiment 'nosuch'" in one_error_line(run(["adder", "train", "nosuch"], folder, warm_env))
    usage = run(["adder", "predict", "1+2", "3+4"], folder, warm_env)
    assert usage.returncode == 2 and "Usage: adder predict" in usage.stderr, shown(usage)
    assert processes(warm_env)


def test_killing_the_caller_kills_its_command(tmp_path, warm_env):
    folder = project(tmp_path / "p")
    run(["adder", "generate", "seed"], folder, warm_env)
    write_params(folder, {**PARAMS, "experiments": {EXPERIMENT: {**PARAMS["experiments"][EXPERIMENT], "epochs": 500}}})
    caller = subprocess.Popen(["adder", "train", EXPERIMENT], cwd=folder, env=warm_env, stdout=subprocess.PIPE, text=True)
    assert "epoch" in caller.stdout.readline()  # training has started, in a child of the server
    deadline = time.monotonic() + 10
    while len(processes(warm_env)) != 2 and time.monotonic() < deadline:  # generate's child may still be exiting
        time.sleep(0.1)
    server, child = processes(warm_env)
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child) and alive(server)


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for the server to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
