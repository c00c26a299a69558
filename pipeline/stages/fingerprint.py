"""The fingerprint stages: fingerprints/<stage>.json, the sha256 of each module a kind of stage runs.

The generate, train and evaluate stages each depend on their kind's fingerprint instead of listing every module
themselves. DVC rewrites all of dvc.lock after each stage, and with some thirty module entries per stage (1,500
in all) that rewrite cost about 1.5 s a stage; one fingerprint per kind keeps dvc.lock a third of that size.
An edit of a module still stales exactly the stages that run it, through the fingerprint of each kind whose
fingerprint-<stage> stage lists it; an edit of this module changes no fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from pipeline.command import arguments, run_command
from pipeline.config import project_root
from pipeline.errors import AdderError

STAGE = "fingerprint-{}"
THIS = Path(__file__).resolve()


def fingerprinted(root: Path, stage: str) -> list[str]:
    """The files dvc.yaml's fingerprint-<stage> depends on, this module aside."""
    stages = yaml.load((root / "dvc.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    body = stages.get("stages", {}).get(STAGE.format(stage))
    if body is None:
        raise AdderError(f"dvc.yaml has no stage {STAGE.format(stage)!r}")
    return sorted(dep for dep in body.get("deps", []) if (root / dep).resolve() != THIS)


def fingerprint(stage: str) -> Path:
    """Writes fingerprints/<stage>.json: {file: sha256} for each file the stage's fingerprint covers."""
    root = project_root()
    hashes = {dep: hashlib.sha256((root / dep).read_bytes()).hexdigest() for dep in fingerprinted(root, stage)}
    out = root / "fingerprints" / f"{stage}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(hashes, indent=1) + "\n")
    return out


def main() -> None:
    """`python3 -m pipeline.stages.fingerprint STAGE`, what dvc.yaml runs."""
    run_command(lambda: fingerprint(*arguments("python3 -m pipeline.stages.fingerprint STAGE", 1, 1)), __spec__.name)


if __name__ == "__main__":
    main()
