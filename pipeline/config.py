"""params.yaml -> validated settings. Every error names the key and what is allowed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import AdderError

PARAMS_FILE = "params.yaml"
MODELS = ("naive_lstm", "naive_mlp", "seq2seq")
SEQUENCE_MODELS = ("seq2seq",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(Strict):
    """A distribution of problems: `terms` operands joined by '+'."""

    terms: int = Field(2, ge=2, le=20)
    # Operands are either uniform in min_value..max_value (the tutorial's randint)
    # or have 1..digits digits, the digit count drawn first (Keras addition_rnn).
    min_value: int | None = Field(None, ge=0)
    max_value: int | None = Field(None, ge=1)
    digits: int | None = Field(None, ge=1, le=18)
    # Disjoint splits hold distinct problems and share none; tiny problem spaces
    # (the tutorial's 100 problems) are drawn with replacement instead.
    disjoint: bool = True
    train_size: int = Field(ge=1)
    val_size: int = Field(ge=1)
    test_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _one_operand_range(self) -> Task:
        ranged = self.min_value is not None or self.max_value is not None
        if ranged == (self.digits is not None):
            raise ValueError("set either min_value and max_value, or digits (not both)")
        if ranged and (self.min_value is None or self.max_value is None or self.min_value > self.max_value):
            raise ValueError("min_value and max_value must both be set, with min_value <= max_value")
        if self.terms * self.high >= 2**63:
            raise ValueError("terms x largest operand must stay below 2**63 (answers are int64)")
        return self

    @property
    def low(self) -> int:
        return 0 if self.digits else self.min_value

    @property
    def high(self) -> int:
        return 10**self.digits - 1 if self.digits else self.max_value

    @property
    def space_size(self) -> int:
        """How many distinct problems the task can produce."""
        return (self.high - self.low + 1) ** self.terms


class Experiment(Strict):
    """A task, a model and its hyper-parameters."""

    task: str
    model: Literal[MODELS]
    units: tuple[Annotated[int, Field(ge=1)], ...] = Field((100, 50), min_length=1)
    epochs: int = Field(ge=1)
    # Each epoch draws this many fresh examples from the training split
    # (the tutorial's loop); unset means one pass over the whole split.
    samples_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(0.001, gt=0, le=1)

    @model_validator(mode="after")
    def _units_fit_model(self) -> Experiment:
        if self.model == "seq2seq" and len(self.units) != 2:
            raise ValueError("seq2seq takes units: [encoder, decoder], two numbers")
        return self

    @property
    def is_sequence(self) -> bool:
        return self.model in SEQUENCE_MODELS


class Params(Strict):
    seed: int = Field(ge=0, lt=2**32)
    tasks: dict[str, Task] = Field(min_length=1)
    experiments: dict[str, Experiment] = Field(min_length=1)

    @model_validator(mode="after")
    def _experiments_match_tasks(self) -> Params:
        for name in self.tasks:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"task name {name!r}: use lowercase letters, digits and '_'")
        for name, exp in self.experiments.items():
            if exp.task not in self.tasks:
                raise ValueError(f"experiments.{name}.task: {exp.task!r} is not a task; known: {', '.join(self.tasks)}")
            pattern = rf"{re.escape(exp.task)}-{exp.model}(-[a-z0-9_]+)?"
            if not re.fullmatch(pattern, name):
                raise ValueError(f"experiment name {name!r}: must be <task>-<model>[-variant], here {exp.task}-{exp.model}[-...]")
        return self

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise AdderError(f"unknown experiment {name!r}; known: {', '.join(self.experiments)}")
        return self.experiments[name]

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise AdderError(f"unknown task {name!r}; known: {', '.join(self.tasks)}")
        return self.tasks[name]


def project_root() -> Path:
    """The folder holding params.yaml: $ADDER_ROOT, else the nearest one up from the cwd."""
    if env := os.environ.get("ADDER_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / PARAMS_FILE).is_file():
            return folder
    raise AdderError(f"no {PARAMS_FILE} in {here} or any parent folder; run adder inside the project")


def describe(error: ValidationError) -> str:
    """The first validation error as 'key.path: what is allowed (got value)'."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        section = {"tasks": Task, "experiments": Experiment}.get(first["loc"][0], Params) if len(first["loc"]) > 1 else Params
        return f"{where}: unknown key; allowed: {', '.join(section.model_fields)}"
    got = "" if first["type"] in ("missing", "value_error") else f" (got {first['input']!r})"
    return f"{where + ': ' if where else ''}{message}{got}"


def parse_params(raw: object, source: str = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise AdderError(f"{source}: {describe(e)}") from None


def load_params(path: Path | None = None) -> Params:
    path = path or project_root() / PARAMS_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise AdderError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise AdderError(f"{path.name}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_params(raw, path.name)
