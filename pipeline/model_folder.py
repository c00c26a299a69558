"""A trained model's folder, models/<experiment>/: published whole, and checked before use.

Training writes everything into a staging folder beside it and renames that into place only when it is
complete, so a killed training leaves the previous folder (or none), never a mix. run.json names the
MLflow run that logged exactly these files, with each file's sha256; whoever loads the folder checks them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import AdderError

FILES = ("model.keras", "codec.json", "history.csv")
STAGING = ".staging-"  # models/.staging-<experiment>-*: a training in progress, or one that was killed


def staging_folder(out: Path) -> Path:
    """A fresh folder to write out's files into, on out's filesystem (so that publishing is a rename);
    removes those a killed training left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f"{STAGING}{out.name}-*"):
        if not alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING}{out.name}-{os.getpid()}-", dir=out.parent))


def alive(staging: Path) -> bool:
    """Whether the process that made a staging folder (its pid is in the name) still runs."""
    pid = staging.name.removeprefix(STAGING).rsplit("-", 2)[-2]
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES if (folder / name).is_file()}


def publish(staging: Path, info: dict, out: Path) -> None:
    """Writes run.json (info with the files' sha256) into staging, then puts staging in out's place."""
    (staging / "run.json").write_text(json.dumps({**info, "sha256": digests(staging)}, indent=2) + "\n")
    if out.exists():
        old = out.with_name(f"{STAGING}{out.name}-{os.getpid()}-old")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def verified(folder: Path) -> dict:
    """The folder's run.json, once its files are checked against the sha256 it records; AdderError in one
    line naming the file otherwise. Folders trained before run.json recorded digests are taken as they are."""
    name = folder.name
    retrain = f"retrain it: dvc repro --force train@{name} (or adder train {name})"
    if not (folder / "model.keras").is_file() or not (folder / "run.json").is_file():
        raise AdderError(f"no trained model in {folder}; run `dvc repro` (or `adder train {name}`) first")
    try:
        info = json.loads((folder / "run.json").read_text())
        if not isinstance(info, dict) or "run_id" not in info:
            raise ValueError("no run_id")
    except (ValueError, UnicodeDecodeError):
        raise AdderError(f"{folder / 'run.json'} is corrupt; {retrain}") from None
    for file, digest in info.get("sha256", {}).items():
        path = folder / file
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise AdderError(f"{path} is not the file MLflow run {info['run_id']} logged (its sha256 differs from "
                             f"run.json's); {retrain}")
    return info
