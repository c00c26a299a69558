"""A warm process for `adder`'s commands: Keras, its backend and MLflow imported once, one fork per command.

Each stage of a `dvc repro` is a new `adder` process that spends most of its start-up importing the same
libraries. So a command instead asks a background server, which has imported them already, to fork a child
(ADDER_WARM=0 turns this off); the child runs the command with the caller's arguments, folder, environment,
stdin, stdout and stderr, and its exit status becomes the caller's. The server only imports modules (it
builds, seeds and opens nothing), so a child computes what a fresh process would. One server serves one
Python, one Keras backend and one version of adder's code (a changed module starts another), and exits after
IDLE_SECONDS without a command. Killing the caller kills its child; a signal to the caller reaches the child.
The first command waits for the server it starts, except `adder predict`, which answers in-process meanwhile:
one answer is no reason to wait for a server, the next ones are.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import importlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COMMANDS = {"generate", "train", "evaluate", "compare", "predict"}
IDLE_SECONDS = 300
STARTUP_SECONDS = 120
# Environment read when the libraries are imported: a server serves only callers that agree on it.
IMPORT_TIME_ENV = ("JAX_", "XLA_", "TF_", "KERAS_", "CUDA_", "OMP_", "PYTHON")
PACKAGE = Path(__file__).resolve().parent
LAZY_IMPORTS = ("matplotlib.pyplot", "scipy.stats", "sklearn.metrics", "git")
in_child = False  # set in a forked child: its own `adder` runs in-process
tried = False  # set once this process has asked for a server: a command that could not hand off asks no more


# What a fork may run: the CLI, or a DVC stage's own entry (`python3 -m pipeline.stages.train NAME`).
ENTRIES = ("pipeline.cli", "pipeline.stages.generate", "pipeline.stages.train", "pipeline.stages.evaluate",
           "pipeline.stages.compare")


def wanted(argv: list[str], entry: str) -> bool:
    if os.environ.get("ADDER_WARM", "1") != "1" or in_child or tried or entry not in ENTRIES:
        return False
    return entry != "pipeline.cli" or (len(argv) > 1 and argv[1] in COMMANDS)


def project_backend() -> str | None:
    """The backend params.yaml names, or None when it cannot be read (the command then runs in-process and
    reports the problem itself)."""
    import yaml

    from pipeline.backend import BACKENDS, DEFAULT
    from pipeline.config import PARAMS_FILE, project_root

    try:
        name = (yaml.safe_load((project_root() / PARAMS_FILE).read_text()) or {}).get("backend", DEFAULT)
    except Exception:
        return None
    return name if name in BACKENDS else None


def address(backend: str) -> Path:
    """The server's socket: one per Python, backend, import-time environment and version of the code."""
    key = hashlib.sha256(json.dumps([sys.executable, sys.path, backend, sorted(
        (k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV))]).encode())
    for module in sorted(PACKAGE.rglob("*.py")):
        key.update(module.read_bytes())
    return runtime_folder() / f"{key.hexdigest()[:20]}.sock"


class Refused(Exception):
    """Something in the warm process's folder is not this user's alone: the command runs in-process."""


def runtime_folder() -> Path:
    """The folder of the servers' sockets and logs, which only this user may enter: the request sent through
    a socket carries the caller's environment (its secrets too) and streams, so a folder another user made
    first, or can write to, would hand them over. $XDG_RUNTIME_DIR/adder-warm where that is this user's
    with mode 0700, else <temp folder>/adder-warm-<uid>; raises Refused when the folder is not private."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    parent = Path(xdg) if xdg and why_not_private(Path(xdg)) is None else None
    folder = parent / "adder-warm" if parent else Path(tempfile.gettempdir()) / f"adder-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise Refused(f"cannot create {folder} ({e.strerror})") from None
    if reason := why_not_private(folder):
        raise Refused(f"{folder} is {reason}; remove it")
    return folder


def why_not_private(folder: Path) -> str | None:
    """Why folder is not a directory private to this user, or None; a symbolic link is not followed."""
    try:
        st = os.lstat(folder)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.getuid():
        return f"owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o077:
        return f"open to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_file(path: Path, flags: int) -> int:
    """A file in the folder, opened without following a symbolic link planted at its name."""
    try:
        return os.open(path, flags | os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise Refused(f"{path} is a symbolic link; remove it" if e.errno == errno.ELOOP
                      else f"cannot open {path} ({e.strerror})") from None


# The caller

def run(argv: list[str], entry: str) -> int | None:
    """Runs the command in a child of the warm server; its exit status, or None when no server could be
    reached or started (the caller then runs the command itself)."""
    global tried
    tried = True
    backend = project_backend()
    if backend is None:
        return None
    try:
        path = address(backend)
        one_answer = entry == "pipeline.cli" and argv[1] == "predict"
        conn = connect(path) or start(path, backend, wait=not one_answer)
    except Refused as e:
        print(f"warning: not using adder's warm process: {e}", file=sys.stderr)
        return None
    if conn is None:
        return None
    request = {"argv": argv, "entry": entry, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    replies = conn.makefile("rb")
    child = replies.readline()
    if child:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _: os.kill(int(child), signum))
    status = child and replies.readline()
    if not status:
        print(f"error: adder's process for `{' '.join(argv[1:])}` died without an exit status", file=sys.stderr)
        return 1
    return int(status)


def connect(path: Path) -> socket.socket | None:
    """A connection to the server at path, None when none listens there; raises Refused when the process
    listening is another user's (only root can put one in a private folder, but the request is a secret)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    # SO_PEERCRED is Linux's; without it (macOS) the folder's check alone keeps other users' servers out.
    if hasattr(socket, "SO_PEERCRED"):
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            conn.close()
            raise Refused(f"the server at {path} runs as another user (uid {uid}); remove it")
    return conn


def start(path: Path, backend: str, wait: bool = True) -> socket.socket | None:
    """Starts a server at path (one caller at a time, so concurrent first commands start one) and connects;
    None without waiting for it unless wait."""
    with open(private_file(path.with_suffix(".lock"), 0), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if conn := connect(path):
            return conn
        path.unlink(missing_ok=True)  # left by a server that died
        log = private_file(path.with_suffix(".log"), os.O_TRUNC)
        try:
            server = subprocess.Popen([sys.executable, "-m", "pipeline.warm", str(path), backend],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                      start_new_session=True)
        finally:
            os.close(log)
        deadline = time.monotonic() + (STARTUP_SECONDS if wait else 0)
        while time.monotonic() < deadline and server.poll() is None:
            if conn := connect(path):
                return conn
            time.sleep(0.05)
    return None


# The server

def serve(path: Path, backend_name: str) -> None:
    from pipeline import backend

    started_with = dict(os.environ)
    backend.use(backend_name)
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.utils import requirements_utils

    # Logging a model checks its requirements against a map of every installed package (seconds to build).
    getattr(requirements_utils, "_init_packages_to_modules_map", lambda: None)()

    for entry in (*ENTRIES, "pipeline.predict"):  # by name: the commands import this module, not back
        importlib.import_module(entry)
    # What the commands import inside functions, a second or so each: figures, intervals, the naive models' RMSE,
    # and GitPython, which MLflow imports to tag each run it starts with the commit.
    import matplotlib

    matplotlib.use("Agg")
    for library in LAZY_IMPORTS:
        importlib.import_module(library)

    # Defaults the imports set (os.environ.setdefault), which a fresh process would add to its caller's.
    defaults = {k: v for k, v in os.environ.items() if started_with.get(k) != v}
    # Reaped at once, so a killed command's pid is gone (not a zombie) when the next command asks whether
    # the process behind a RUNNING run is alive.
    signal.signal(signal.SIGCHLD, lambda *_: reap())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    listener.settimeout(1)
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < IDLE_SECONDS:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            idle_since = time.monotonic()
            conn.settimeout(None)
            message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            while not message.endswith(b"\n"):
                message += conn.recv(1 << 16)
            sys.stdout.flush(), sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                run_child(conn, json.loads(message), fds, defaults)
            conn.close()
            for fd in fds:
                os.close(fd)
    finally:
        path.unlink(missing_ok=True)


def reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def run_child(conn: socket.socket, request: dict, fds: list[int], defaults: dict) -> None:
    """Becomes the caller's command: its streams, folder and environment; never returns."""
    global in_child
    in_child = True
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command's own subprocesses are its to wait for
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line by line, as on a terminal
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**defaults, **request["env"]})
    conn.sendall(f"{os.getpid()}\n".encode())
    threading.Thread(target=die_with_caller, args=(conn,), daemon=True).start()
    sys.argv = request["argv"]
    code = 0
    try:
        if request.get("entry") not in ENTRIES:
            raise SystemExit(f"error: adder's warm process runs no entry {str(request.get('entry'))[:80]!r}")
        importlib.import_module(request["entry"]).main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush(), sys.stderr.flush()
    conn.sendall(f"{code}\n".encode())
    os._exit(code)


def die_with_caller(conn: socket.socket) -> None:
    """The caller sends nothing after its request: end of stream means it is gone, and so is its command."""
    try:
        conn.recv(1)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    from pipeline import warm  # the module the commands import, whose `in_child` their children set

    warm.serve(Path(sys.argv[1]), sys.argv[2])
