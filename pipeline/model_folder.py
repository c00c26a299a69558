"""A trained model's folder, models/<experiment>/: published whole, and checked before use.

Training writes everything into a staging folder beside it and renames that into place only when it is
complete, so a killed training leaves the previous folder (or none), never a mix. run.json names the
MLflow run that logged exactly these files, with each file's sha256; whoever loads the folder checks them."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from pipeline.codec import Codec, load_codec
from pipeline.errors import AdderError

FILES = ("model.keras", "codec.json", "history.csv")
# What run.json's fields must look like: it may arrive from a DVC remote, and serve and predict act on it.
RUN_ID = re.compile(r"[0-9a-f]{32}")
MODEL_URI = re.compile(r"models:/m-[0-9a-f]{32}")  # a model logged to the tracking store, nothing else
SHA256 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # an experiment's folder name: never a path


def experiment_folder(root: Path, name: str) -> Path:
    """models/<name>/, for an experiment name that cannot leave models/ (no '/', no '..')."""
    if not NAME.fullmatch(name):
        raise AdderError(f"{name!r} is not an experiment name (letters, digits, '_', '-' and '.'; no '/' or '..')")
    return root / "models" / name
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
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in FILES if (folder / name).is_file()}


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
    """The folder's run.json, once its fields are checked and its files match the sha256 it records;
    AdderError in one line naming the file otherwise."""
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
    if problem := malformed(info):
        raise AdderError(f"{folder / 'run.json'} is not as training writes it ({problem}); {retrain}")
    for file, digest in info["sha256"].items():
        path = folder / file
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise AdderError(f"{path} is not the file MLflow run {info['run_id']} logged (its sha256 differs from "
                             f"run.json's); {retrain}")
    return info


def malformed(info: dict) -> str | None:
    """What is wrong with run.json's fields, or None: ids and URIs of the tracking store only, a digest of
    every file that loads, seeds as integers."""
    for key, pattern in (("run_id", RUN_ID), ("parent_run_id", RUN_ID), ("model_uri", MODEL_URI)):
        if key in info and not (isinstance(info[key], str) and pattern.fullmatch(info[key])):
            return f"{key} {str(info[key])[:80]!r}"
    digests = info.get("sha256")
    if not isinstance(digests, dict) or not {"model.keras", "codec.json"} <= digests.keys():
        return "no sha256 of model.keras and codec.json"
    if not all(file in FILES and isinstance(d, str) and SHA256.fullmatch(d) for file, d in digests.items()):
        return "sha256 names a file training does not write"
    if "device" in info and not (isinstance(info["device"], str) and len(info["device"]) <= 200):
        return "device"
    seeds = info.get("seeds", [])
    if not isinstance(seeds, list) or not all(type(seed) is int for seed in seeds) or \
            ("chosen_seed" in info and info["chosen_seed"] not in seeds):
        return "seeds"
    return None


def validation_score(folder: Path) -> float:
    """The exact match on the validation split after the last epoch, from the folder's history.csv."""
    with open(folder / "history.csv", newline="") as history:
        return float(list(csv.DictReader(history))[-1]["val_exact_match"])


def load_trained(folder: Path) -> tuple:
    """The Keras model and codec that `adder train` published in folder, once its files are checked
    against run.json; AdderError naming the file if one is corrupt."""
    verified(folder)
    return load_keras(folder / "model.keras"), read_codec(folder / "codec.json")


def load_keras(path: Path):
    import keras

    from pipeline.kinds import kind

    kind("transformer")  # registers its custom layers (PositionalEmbedding, TransformerBlock) before loading

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # a truncated or foreign file fails in any of zipfile, h5py, json or Keras itself
        raise AdderError(f"{path} is not a Keras model that loads ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'})") from None


def read_codec(path: Path) -> Codec:
    try:
        return load_codec(path)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:  # truncated JSON, or not a codec's
        raise AdderError(f"{path} is not a codec that loads ({type(e).__name__}); retrain the model") from None
