"""ADDER_WARM=1: commands run in forks of a warm server, with real processes (server, children, callers)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TINY, cli_env, csv_without_timing, one_error_line, run, shown, write_params

from pipeline import warm

EXPERIMENT = "seed-seq2seq"
PARAMS = {**TINY, "tasks": {"seed": TINY["tasks"]["seed"]},
          "experiments": {EXPERIMENT: TINY["experiments"][EXPERIMENT]}}


@pytest.fixture
def warm_env():
    """The environment of a warm command, with its own socket folder (short: a socket's path has at most
    107 bytes); stops the servers it started."""
    sockets = tempfile.mkdtemp(prefix="adder-", dir="/tmp")
    env = {k: v for k, v in cli_env().items() if k != "XDG_RUNTIME_DIR"}  # else the servers would live there
    yield {**env, "ADDER_WARM": "1", "TMPDIR": sockets}
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
    for folder, env in ((fresh, {**cli_env(), "ADDER_WARM": "0"}), (warm, warm_env),
                        (warm, warm_env)):  # the second: a warm fork
        for command in (["adder", "generate", "seed"], ["adder", "train", EXPERIMENT]):
            result = run(command, folder, env)
            assert result.returncode == 0, shown(result)
        assert "trained in" in result.stdout
    # One server, no child left behind: a fork sends its exit status just before it exits.
    deadline = time.monotonic() + 10
    while len(processes(warm_env)) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes(warm_env)) == 1
    for split in ("train", "val", "test"):
        assert ((fresh / "data" / "seed" / f"{split}.csv").read_bytes()
                == (warm / "data" / "seed" / f"{split}.csv").read_bytes())
    history = Path("models", EXPERIMENT, "history.csv")
    assert csv_without_timing(fresh / history) == csv_without_timing(warm / history)


def test_a_stage_goes_to_the_warm_process_before_importing_its_libraries(tmp_path, warm_env):
    """What dvc.yaml runs, `python3 -m pipeline.stages.<stage>`: its caller never imports MLflow or pandas."""
    folder = project(tmp_path / "p")
    for _ in range(2):  # the first starts the server, the second finds it
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.stages.generate", "seed"],
                                cwd=folder, env=warm_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "seed: train" in result.stdout, shown(result)
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "pipeline.warm" in imported and not imported & {"mlflow", "pandas", "keras"}, sorted(imported)
    assert (folder / "data" / "seed" / "train.csv").is_file() and len(processes(warm_env)) >= 1


def test_a_warm_command_keeps_the_exit_status_and_one_line_error(tmp_path, warm_env):
    folder = project(tmp_path / "p")
    assert "unknown experiment 'nosuch'" in one_error_line(run(["adder", "train", "nosuch"], folder, warm_env))
    usage = one_error_line(run(["adder", "predict", "1+2", "3+4"], folder, warm_env))
    assert "unexpected extra argument" in usage and "(usage: adder predict --help)" in usage, usage
    assert processes(warm_env)


def test_killing_the_caller_kills_its_command(tmp_path, warm_env):
    folder = project(tmp_path / "p")
    run(["adder", "generate", "seed"], folder, warm_env)
    write_params(folder, {**PARAMS, "experiments": {EXPERIMENT: {**PARAMS["experiments"][EXPERIMENT], "epochs": 500}}})
    caller = subprocess.Popen(["adder", "train", EXPERIMENT], cwd=folder, env=warm_env, stdout=subprocess.PIPE,
                              text=True)
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


# The folder of the sockets: only the user's own, or the command runs in-process

ARGV = ["adder", "predict", "12+50"]
NOBODY = 65534
REFUSED = "warning: not using adder's warm process: "


@pytest.fixture
def caller(monkeypatch):
    """warm.run in this process, under a temp folder of the test's own (short: a socket's path has at most 107
    bytes) and no XDG_RUNTIME_DIR. A server it starts is recorded, not started, and the socket's name does not
    depend on adder's code (edited meanwhile, it would name another socket)."""
    tmp = Path(tempfile.mkdtemp(prefix="adder-", dir="/tmp"))
    (tmp / "code").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(warm, "PACKAGE", tmp / "code")
    monkeypatch.setattr(warm, "project_backend", lambda: "jax")
    monkeypatch.setattr(warm, "tried", False)  # restored after: warm.run sets it for the rest of the process
    started = []
    popen = lambda args, **_: started.append(args) or SimpleNamespace(poll=lambda: 1)  # noqa: E731 - dies at once
    monkeypatch.setattr(warm, "subprocess", SimpleNamespace(Popen=popen, DEVNULL=subprocess.DEVNULL))
    yield SimpleNamespace(tmp=tmp, folder=tmp / f"adder-warm-{os.getuid()}", started=started)
    shutil.rmtree(tmp, ignore_errors=True)


def warning(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.rstrip("\n")


def test_the_folder_and_its_files_are_the_user_s_alone(caller, capsys):
    assert warm.run(ARGV, "pipeline.cli") is None and len(caller.started) == 1  # the server (here) died at once
    assert capsys.readouterr().err == ""
    assert caller.folder.stat().st_mode & 0o777 == 0o700
    files = sorted(caller.folder.iterdir())
    assert [f.suffix for f in files] == [".lock", ".log"] and all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_a_command_that_could_not_hand_off_asks_once(caller, capsys, monkeypatch):
    """A stage asks while Python imports its package, then again as it runs (run_command): one server start,
    and the refusal said once, not twice."""
    from pipeline.command import hand_off

    hand_off(ARGV, "pipeline.cli")
    hand_off(ARGV, "pipeline.cli")
    assert len(caller.started) == 1 and capsys.readouterr().err == ""
    monkeypatch.setattr(warm, "tried", False)
    caller.started.clear()
    shutil.rmtree(caller.folder)
    caller.folder.mkdir(mode=0o777)
    caller.folder.chmod(0o777)
    hand_off(ARGV, "pipeline.cli")
    hand_off(ARGV, "pipeline.cli")
    assert warning(capsys).startswith(REFUSED) and not caller.started


def test_a_folder_other_users_can_write_is_refused(caller, capsys):
    caller.folder.mkdir()
    caller.folder.chmod(0o777)
    assert warm.run(ARGV, "pipeline.cli") is None  # the caller runs the command in-process
    assert not list(caller.folder.iterdir()) and not caller.started
    assert warning(capsys) == f"{REFUSED}{caller.folder} is open to other users (mode 777); remove it"


def test_a_folder_that_is_a_symbolic_link_is_refused(caller, capsys):
    elsewhere = caller.tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    caller.folder.symlink_to(elsewhere)
    assert warm.run(ARGV, "pipeline.cli") is None
    assert not list(elsewhere.iterdir()) and not caller.started
    assert warning(capsys) == f"{REFUSED}{caller.folder} is a symbolic link; remove it"


@pytest.mark.skipif(os.getuid() != 0, reason="only root can make a folder that another user owns")
def test_a_folder_another_user_owns_is_refused(caller, capsys):
    caller.folder.mkdir(mode=0o700)
    os.chown(caller.folder, NOBODY, NOBODY)
    assert warm.run(ARGV, "pipeline.cli") is None
    assert not list(caller.folder.iterdir()) and not caller.started
    assert warning(capsys) == f"{REFUSED}{caller.folder} is owned by another user (uid {NOBODY}); remove it"


@pytest.mark.parametrize("suffix", [".log", ".lock"])
def test_a_symbolic_link_in_the_folder_is_not_followed(caller, capsys, suffix):
    caller.folder.mkdir(mode=0o700)
    precious = caller.tmp / "precious.txt"
    precious.write_text("the user's data\n")
    planted = warm.address("jax").with_suffix(suffix)
    planted.symlink_to(precious)
    assert warm.run(ARGV, "pipeline.cli") is None
    assert precious.read_text() == "the user's data\n"
    assert warning(capsys) == f"{REFUSED}{planted} is a symbolic link; remove it" and not caller.started


@pytest.mark.skipif(os.getuid() != 0, reason="only root can run a server as another user")
def test_a_server_another_user_runs_is_sent_nothing(caller, capsys):
    caller.folder.mkdir(mode=0o700)
    path = warm.address("jax")
    caller.tmp.chmod(0o711)
    shared = caller.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    received = listen_as_nobody(shared / "s")
    (shared / "s").rename(path)  # moved into the folder, as only root could
    status = warm.run(ARGV, "pipeline.cli")
    assert received() == b""  # not the caller's environment
    assert status is None
    assert warning(capsys) == f"{REFUSED}the server at {path} runs as another user (uid {NOBODY}); remove it"


def listen_as_nobody(path: Path):
    """A forked server that runs as NOBODY at path; returns a function that waits for what its one connection
    sent (its first 64 KiB)."""
    reader, writer = os.pipe()
    if pid := os.fork():
        os.close(writer)
        assert os.read(reader, 1) == b"+"  # listening

        def received() -> bytes:
            data = b"".join(iter(lambda: os.read(reader, 1 << 16), b""))
            os.close(reader)
            os.waitpid(pid, 0)
            return data
        return received
    try:
        os.setgid(NOBODY), os.setuid(NOBODY)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(1)
        os.write(writer, b"+")
        listener.settimeout(10)
        conn, _ = listener.accept()
        conn.settimeout(10)
        os.write(writer, conn.recv(1 << 16))
    finally:
        os._exit(0)


def test_the_login_s_runtime_folder_is_used_when_private(caller, monkeypatch):
    runtime = caller.tmp / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert warm.runtime_folder() == runtime / "adder-warm"
    runtime.chmod(0o755)
    assert warm.runtime_folder() == caller.folder
