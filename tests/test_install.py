"""Install paths: one TensorFlow distribution per platform and flavour, every requirement pinned, pip
requirements of logged models derived from what is installed, and make's choice of Python."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from helpers import PROJECT
from packaging.requirements import Requirement

from pipeline import tracking

PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
TENSORFLOWS = {"tensorflow", "tensorflow-cpu"}  # distributions that install the module `tensorflow`


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------------
# pyproject.toml and constraints.txt

PLATFORMS = {  # the marker environment of each platform that pip would evaluate
    "Linux x86-64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "Linux ARM": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "macOS ARM": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "Windows": {"sys_platform": "win32", "platform_machine": "AMD64"},
}


def tensorflows(extra: str | None, platform: str) -> set[str]:
    """The TensorFlow distributions pip would install for the core dependencies plus extra, on platform."""
    requirements = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"].get(extra, [])
    chosen = set()
    for line in requirements:
        requirement = Requirement(line)
        if canonical(requirement.name) in TENSORFLOWS and (
                requirement.marker is None
                or requirement.marker.evaluate({**PLATFORMS[platform], "extra": extra or ""})):
            chosen.add(canonical(requirement.name))
    return chosen


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_flavour_installs_exactly_one_tensorflow(platform):
    # Both distributions install the module `tensorflow`: two of them would overwrite each other's files.
    assert tensorflows(None, platform) == set()  # the flavour is an extra: make setup names cpu or gpu
    assert len(tensorflows("cpu", platform)) == 1
    assert tensorflows("gpu", platform) == {"tensorflow"}
    if platform == "Linux x86-64":  # the CPU-only build where it exists, far smaller than the standard one
        assert tensorflows("cpu", platform) == {"tensorflow-cpu"}
    else:  # tensorflow-cpu has no wheels for macOS or Linux on ARM
        assert tensorflows("cpu", platform) == {"tensorflow"}


def test_gpu_flavour_installs_cuda_on_linux():
    gpu = [Requirement(line) for line in PYPROJECT["project"]["optional-dependencies"]["gpu"]]
    assert any(r.extras == {"and-cuda"} and r.marker.evaluate({**PLATFORMS["Linux x86-64"], "extra": "gpu"})
               for r in gpu)


def test_constraints_pin_every_requirement():
    pins = {}
    for line in (PROJECT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} pins no exact version"
        pins[canonical(name)] = version
    project = PYPROJECT["project"]
    for line in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        requirement = Requirement(line)
        pin = pins.get(canonical(requirement.name))
        assert pin is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pin), f"constraints.txt pins {requirement.name}=={pin}, outside {line!r}"


def test_the_installed_tensorflow_is_one_distribution():
    # A GPU install over a CPU one (or the reverse) that kept both would show here.
    providers = {canonical(name) for name in importlib.metadata.packages_distributions().get("tensorflow", [])}
    assert len(providers) == 1, f"several distributions install the module tensorflow: {sorted(providers)}"


# --------------------------------------------------------------------------------------------------
# pip requirements of the logged models


def fake_distributions(monkeypatch, provider: str | None, versions: dict[str, str]) -> None:
    """Fakes importlib.metadata's lookups, as another platform or flavour would answer them: `provider`
    installs the module tensorflow (None: nothing does), and `versions` are the installed versions."""
    monkeypatch.setattr(importlib.metadata, "packages_distributions",
                        lambda: {"keras": ["keras"], **({"tensorflow": [provider]} if provider else {})})

    def version(name: str) -> str:
        if canonical(name) not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[canonical(name)]

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.parametrize("provider", ["tensorflow", "tensorflow_cpu", "tensorflow-macos"])
def test_requirements_name_the_tensorflow_distribution_installed(monkeypatch, provider):
    fake_distributions(monkeypatch, provider, {canonical(provider): "2.21.0", "keras": "3.15.1"})
    assert tracking.pinned("tensorflow", "keras") == [f"{canonical(provider)}==2.21.0", "keras==3.15.1"]


def test_requirements_never_ask_for_a_distribution_that_is_not_installed(monkeypatch):
    # The standard build (macOS, Linux on ARM, GPUs) without tensorflow-cpu: looking that up by name failed.
    fake_distributions(monkeypatch, "tensorflow", {"tensorflow": "2.21.0", "keras": "3.15.1", "mlflow": "3.17.2"})
    assert tracking.pinned("mlflow", "tensorflow", "keras") == ["mlflow==3.17.2", "tensorflow==2.21.0", "keras==3.15.1"]
    fake_distributions(monkeypatch, None, {"keras": "3.15.1"})  # no TensorFlow at all: its own name, not found
    with pytest.raises(importlib.metadata.PackageNotFoundError, match="tensorflow"):
        tracking.pinned("tensorflow")


def test_requirements_of_this_install():
    tensorflow = tracking.pinned("tensorflow")[0]
    name, version = tensorflow.split("==")
    assert name in TENSORFLOWS and version == importlib.metadata.version(name)


def test_no_module_names_a_tensorflow_distribution():
    # Which distribution is installed depends on the platform and flavour: code asks tracking.pinned.
    for path in (PROJECT / "pipeline").rglob("*.py"):
        named = re.search(r"""["'](tensorflow[-_]cpu)\b""", path.read_text())
        assert named is None, f"{path.relative_to(PROJECT)} names the distribution {named[1]}"


# --------------------------------------------------------------------------------------------------
# make setup: which Python


@pytest.fixture
def fake_pythons(tmp_path):
    """A copy of the Makefile's inputs and a PATH holding only fake interpreters (each prints its version)
    and what make's shell needs; make(*args) runs `make -n` there and returns the result."""
    project, bin_dir = tmp_path / "project", tmp_path / "bin"
    project.mkdir()
    bin_dir.mkdir()
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "params.yaml"):
        shutil.copy(PROJECT / name, project / name)
    for tool in ("cat", "sh", "sed"):
        (bin_dir / tool).symlink_to(shutil.which(tool))

    def add(name: str, version: str) -> None:
        (bin_dir / name).write_text(f"#!/bin/sh\necho {version}\n")
        (bin_dir / name).chmod(0o755)

    def make(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "GPU", "MAKEFLAGS")} | {"PATH": str(bin_dir)}
        return subprocess.run([shutil.which("make"), "-n", "--no-print-directory", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=60)

    def stamp(flavour: str) -> None:
        (project / ".venv").mkdir(exist_ok=True)
        (project / ".venv" / ".installed").write_text(flavour + "\n")

    def backend(name: str) -> None:
        params = project / "params.yaml"
        params.write_text(re.sub(r"(?m)^backend: *\w+", f"backend: {name}", params.read_text()))

    make.add, make.stamp, make.backend = add, stamp, backend
    return make


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_prefers_python_3_11_then_newer_ones(fake_pythons):
    fake_pythons.add("python3", "3.10")
    fake_pythons.add("python3.13", "3.13")
    assert " python3.13 -m venv" in fake_pythons("setup").stdout
    fake_pythons.add("python3.12", "3.12")
    assert " python3.12 -m venv" in fake_pythons("setup").stdout
    fake_pythons.add("python3.11", "3.11")
    result = fake_pythons("setup")
    assert " python3.11 -m venv" in result.stdout
    assert "-e '.[test,scale,sweep,cpu]'" in result.stdout and "uninstall" not in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_without_a_supported_python_says_so_in_one_line(fake_pythons):
    fake_pythons.add("python3", "3.10")
    result = fake_pythons("setup")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ("adder needs Python 3.11, 3.12 or 3.13 but none of python3.11 python3.12 python3.13 python3 is one; "
            "install one, or name it: make setup PYTHON=/path/to/python3.12") in result.stderr
    assert "but python3 is 3.10;" in fake_pythons("setup", "PYTHON=python3").stderr
    assert "but python3.9 is not a Python that runs;" in fake_pythons("setup", "PYTHON=python3.9").stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_installs_the_cuda_build_of_tensorflow_in_place_of_the_cpu_one(fake_pythons):
    fake_pythons.add("python3.11", "3.11")
    fake_pythons.backend("tensorflow")
    uninstall = "/.venv/bin/python --quiet tensorflow tensorflow-cpu"  # uv pip uninstall --python <that>
    result = fake_pythons("setup", "GPU=1")
    # tensorflow-cpu goes before tensorflow[and-cuda] comes: both write the module tensorflow.
    assert result.stdout.index(uninstall) < result.stdout.index("'.[test,scale,sweep,gpu]'")
    assert "echo tensorflow-gpu > .venv/.installed" in result.stdout and "jax-cuda12" not in result.stdout
    for stamp in ("tensorflow-gpu", "gpu"):  # a GPU install stays one (`gpu`: the stamp of older installs)
        fake_pythons.stamp(stamp)
        result = fake_pythons("-B", "setup")
        assert "'.[test,scale,sweep,gpu]'" in result.stdout and uninstall not in result.stdout
    result = fake_pythons("setup", "GPU=0")
    assert result.stdout.index(uninstall) < result.stdout.index("'.[test,scale,sweep,cpu]'")
    assert "echo cpu > .venv/.installed" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_adds_jax_cuda_plugin_when_params_select_jax(fake_pythons):
    fake_pythons.add("python3.11", "3.11")
    assert "backend: jax" in (PROJECT / "params.yaml").read_text()  # the default
    result = fake_pythons("setup", "GPU=1")
    assert "-e '.[test,scale,sweep,cpu,jax-gpu]'" in result.stdout and "uninstall" not in result.stdout
    assert "echo jax-gpu > .venv/.installed" in result.stdout
    fake_pythons.stamp("jax-gpu")
    assert "'.[test,scale,sweep,cpu,jax-gpu]'" in fake_pythons("-B", "setup").stdout
    result = fake_pythons("setup", "GPU=0")  # back to the CPU: the plugin goes, jaxlib stays
    assert result.stdout.index("/.venv/bin/python --quiet jax-cuda12-plugin jax-cuda12-pjrt") < \
        result.stdout.index("-e '.[test,scale,sweep,cpu]'")


def test_jax_cuda_build_is_pinned_to_the_pinned_jax():
    pins = dict(line.split("==") for line in (PROJECT / "constraints.txt").read_text().splitlines())
    assert pins["jax-cuda12-plugin"] == pins["jax-cuda12-pjrt"] == pins["jax"] == pins["jaxlib"]
    extra = [Requirement(line) for line in PYPROJECT["project"]["optional-dependencies"]["jax-gpu"]]
    assert [(r.name, r.extras) for r in extra] == [("jax", {"cuda12"})]


# --------------------------------------------------------------------------------------------------
# stages started by a Python outside the venv (`dvc exp run` from a shell without .venv/bin on PATH)

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the Python the venv was made from


def base_python_lacks_adder() -> bool:
    found = subprocess.run([BASE_PYTHON, "-c", "import importlib.util as u; print(all(u.find_spec(n) for n in "
                            "('keras', 'mlflow', 'pydantic')))"], capture_output=True, text=True)
    return found.stdout.strip() == "False"


def project_copy(folder, with_venv: bool):
    """pipeline/, dvc.yaml and params.yaml in folder, with .venv this test's venv if with_venv."""
    shutil.copytree(PROJECT / "pipeline", folder / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(PROJECT / name, folder / name)
    if with_venv:
        (folder / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return folder


@pytest.mark.skipif(not base_python_lacks_adder(), reason="the base Python has adder's dependencies itself")
@pytest.mark.parametrize("with_venv", [True, False])
def test_a_stage_outside_the_venv_runs_in_it_or_says_how_to_install(tmp_path, with_venv):
    folder = project_copy(tmp_path, with_venv)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no venv on PATH, nothing of this process's
    result = subprocess.run([BASE_PYTHON, "-m", "pipeline.stages.fingerprint", "generate"], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    if with_venv:
        assert result.returncode == 0, result.stderr
        assert (folder / "fingerprints" / "generate.json").is_file()
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "lacks adder's dependencies" in result.stderr and "make setup" in result.stderr, result.stderr
