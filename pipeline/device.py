"""Where a process's Keras backend computes, so that every training run, and the seconds it reports, says
which device they come from."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
from dataclasses import dataclass

from pipeline.errors import AdderError

GIB = 2**30


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "gpu"
    name: str  # the processor's model, or the GPU's
    count: int  # cores, or GPUs
    memory_gib: float | None  # a GPU's memory
    backend: str  # "jax 0.7.2", "tensorflow 2.20.0"

    @property
    def summary(self) -> str:
        """'cpu: 2 cores, AMD EPYC 7B13' or 'gpu: 1 x NVIDIA H200, 139 GiB'."""
        if self.kind == "cpu":
            return f"cpu: {self.count} cores, {self.name}"
        memory = f", {self.memory_gib:.0f} GiB" if self.memory_gib else ""
        return f"gpu: {self.count} x {self.name}{memory}"

    def tags(self) -> dict[str, str]:
        """The MLflow tags of a run trained here."""
        return {"device": self.summary, "device.kind": self.kind, "device.name": self.name,
                "device.count": str(self.count), "backend.version": self.backend}


def cpu_name() -> str:
    """The processor's model as Linux names it, else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu() -> Device:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Device("cpu", cpu_name(), cores, None, "")


def current() -> Device:
    """The device the loaded Keras backend computes on: its first GPU (with how many there are) or the CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        quiet_plugin_errors()  # before JAX's first question to its backends, which starts its plugins
        version = f"jax {jax.__version__}"
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            limit = (gpus[0].memory_stats() or {}).get("bytes_limit")
            return Device("gpu", gpus[0].device_kind, len(gpus), limit / GIB if limit else None, version)
    else:
        import tensorflow as tf

        version = f"tensorflow {tf.__version__}"
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return Device("gpu", details.get("device_name", gpus[0].name), len(gpus), None, version)
    return Device(**{**cpu().__dict__, "backend": version})


# backend -> the distributions whose presence is its CUDA build (`make setup GPU=1`): all of one entry
CUDA_BUILDS = {"jax": (("jax-cuda12-plugin",), ("jax-cuda13-plugin",)),
               "tensorflow": (("tensorflow", "nvidia-cudnn-cu12"),)}


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cuda_build(backend: str) -> str | None:
    """The installed CUDA build of backend, by its distributions' names, or None for its CPU build."""
    for distributions in CUDA_BUILDS.get(backend, ()):
        if all(installed(d) for d in distributions):
            return " + ".join(distributions)
    return None


# What JAX logged, with a traceback, when its CUDA plugin failed to start: kept for the one-line error instead
PLUGIN_ERRORS: list[str] = []


def keep_plugin_error(record: logging.LogRecord) -> bool:
    """A filter on JAX's backend logger: a plugin's failure is recorded, not printed."""
    if record.exc_info and "plugin configuration error" in record.getMessage():
        kind, error = record.exc_info[0], record.exc_info[1]
        PLUGIN_ERRORS.append(f"{kind.__name__}: {(str(error).strip().splitlines() or [''])[0]}")
        return False
    return True


def quiet_plugin_errors() -> None:
    """Its CUDA plugin's failure becomes part of require_requested_gpu's one line."""
    logger = logging.getLogger("jax._src.xla_bridge")
    if keep_plugin_error not in logger.filters:
        logger.addFilter(keep_plugin_error)


def why_no_gpu(backend: str) -> str:
    """What the backend says when asked for its GPU, in one line."""
    if backend == "jax":
        import jax

        if PLUGIN_ERRORS:
            return PLUGIN_ERRORS[-1]
        try:
            jax.devices("gpu")
        except RuntimeError as error:
            return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return "its GPU is not its default device (JAX_PLATFORMS?)"
    return "it lists no physical GPU device"


def require_requested_gpu(backend: str, where: Device) -> None:
    """With the backend's CUDA build installed (asking for the GPU), computing on the CPU is an error, said
    before any training: otherwise a GPU machine with a broken driver trains for hours on its CPU, silently."""
    if where.kind == "cpu" and (build := cuda_build(backend)):
        raise AdderError(f"{build} is installed (make setup GPU=1) but {backend} sees no GPU: {why_no_gpu(backend)}; "
                         "run on a machine with an NVIDIA GPU and its driver, or make setup GPU=0 to train on the CPU")
