"""params.yaml -> validated settings. Every error names the key and what is allowed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.backend import BACKENDS
from pipeline.backend import DEFAULT as DEFAULT_BACKEND
from pipeline.errors import AdderError
from pipeline.expressions import OPERATIONS, count_layouts, largest_magnitude

PARAMS_FILE = "params.yaml"
MODELS = ("naive_lstm", "naive_mlp", "seq2seq", "digitwise", "attention", "transformer")
NUMBER_MODELS = ("naive_lstm", "naive_mlp")  # operands as numbers: plain sums of a fixed number of terms
SEQUENCE_MODELS = ("seq2seq", "digitwise", "attention", "transformer")
# Input framings without options.
FIXED_ENCODINGS = {"digitwise": "digit columns", "attention": "integer", "transformer": "integer"}
DECODER_MODELS = ("attention", "transformer")  # fed their own previous output: they write answers of any length
ANSWERS = ("plain", "reversed", "steps", "rewrite")
MILESTONES = (0.99, 0.999)  # held-out exact match levels whose time to reach is recorded


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(Strict):
    """A distribution of problems: min_terms..terms operands joined by `ops`, optionally with brackets."""

    terms: int = Field(2, ge=2, le=20)  # the most operands in a problem
    # The number of operands is uniform in min_terms..terms; unset means always `terms`.
    min_terms: int | None = Field(None, ge=2, le=20)
    # Operations drawn uniformly between each pair of operands, * before + and -.
    ops: str = "+"
    # One random span of two or more operands (not all) in brackets, evaluated first; or none.
    brackets: bool = False
    # With brackets: spans inside spans up to this deep ('((12+7)*3-40)*2'), every layout equally likely.
    nesting: int = Field(1, ge=1, le=3)
    # Problems with any value on the way (the answer or an intermediate result) of this magnitude or more
    # are drawn again.
    value_limit: int | None = Field(None, ge=1)
    # Operands are either uniform in min_value..max_value (the tutorial's randint)
    # or have 1..digits digits, the digit count drawn first (Keras addition_rnn).
    min_value: int | None = Field(None, ge=0)
    max_value: int | None = Field(None, ge=1)
    digits: int | None = Field(None, ge=1, le=18)
    # With digits: every operand has exactly `digits` digits instead of 1..digits.
    fixed_width: bool = False
    # Disjoint splits hold distinct problems and share none; tiny problem spaces
    # (the tutorial's 100 problems) are drawn with replacement instead.
    disjoint: bool = True
    # A task no experiment trains on, only scored on (an experiment's eval_tasks), needs no train or val split.
    train_size: int = Field(ge=0)
    val_size: int = Field(ge=0)
    test_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _one_operand_range(self) -> Task:
        ranged = self.min_value is not None or self.max_value is not None
        if ranged == (self.digits is not None):
            raise ValueError("set either min_value and max_value, or digits (not both)")
        if ranged and (self.min_value is None or self.max_value is None or self.min_value > self.max_value):
            raise ValueError("min_value and max_value must both be set, with min_value <= max_value")
        if self.fixed_width and self.digits is None:
            raise ValueError("fixed_width needs digits (operands of exactly that many digits)")
        if self.min_terms is not None and self.min_terms > self.terms:
            raise ValueError(f"min_terms ({self.min_terms}) must be at most terms ({self.terms})")
        if not self.ops or set(self.ops) - set(OPERATIONS) or len(set(self.ops)) < len(self.ops):
            raise ValueError(f"ops: one or more of {OPERATIONS!r}, each once (got {self.ops!r})")
        if self.brackets and self.terms < 3:
            raise ValueError("brackets need terms >= 3 (a span of two or more operands, not all of them)")
        if self.nesting > 1 and not self.brackets:
            raise ValueError("nesting needs brackets: true")
        if self.nesting > 1 and self.terms < self.nesting + 2:
            raise ValueError(f"nesting: {self.nesting} needs terms >= {self.nesting + 2} "
                             "(each span holds two or more operands, not all of those around it)")
        if (self.nesting > 1 or self.value_limit is not None) and (self.digits is None or self.fixed_width):
            raise ValueError("nesting and value_limit need digits (operands of 1..digits digits)")
        if largest_magnitude(self.terms, self.high, self.ops) >= 2**63:
            raise ValueError("answers could reach 2**63 with these terms, digits and ops (answers are int64)")
        return self

    @property
    def low(self) -> int:
        if self.digits:
            return 10 ** (self.digits - 1) if self.fixed_width and self.digits > 1 else 0
        return self.min_value

    @property
    def high(self) -> int:
        return 10**self.digits - 1 if self.digits else self.max_value

    @property
    def space_size(self) -> int:
        """How many distinct problems the task can produce (distinct texts, exactly)."""
        values = self.high - self.low + 1
        fewest = self.terms if self.min_terms is None else self.min_terms
        depth = self.nesting if self.brackets else 0
        return sum(values**n * len(self.ops) ** (n - 1) * count_layouts(n, depth)
                   for n in range(fewest, self.terms + 1))


class Experiment(Strict):
    """A task, a model and its hyper-parameters."""

    task: str
    model: Literal[MODELS]
    units: tuple[Annotated[int, Field(ge=1)], ...] = Field((100, 50), min_length=1)
    epochs: int = Field(ge=1)
    # Each epoch draws this many fresh examples from the training split (the tutorial's loop), rounded up
    # to whole batches; unset means one pass over the whole split.
    samples_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(0.001, gt=0, le=1)
    # cosine: decay the learning rate to zero over the planned steps; large batches train fast with it.
    schedule: Literal["constant", "cosine"] = "constant"
    # Epochs over which the rate climbs linearly from a tenth of learning_rate before its schedule starts.
    warmup_epochs: int = Field(0, ge=0)
    # Problems holding an operation drawn this many times as often ({"*": 3}); a problem counts at the
    # largest weight among its operations, 1 for those not listed. Needs samples_per_epoch (draws).
    oversample: dict[Literal["+", "-", "*"], Annotated[float, Field(gt=0)]] = {}
    # Stop once held-out exact match reaches this (time-to-accuracy is the headline figure).
    target: float | None = Field(None, gt=0, le=1)
    # Stop after the epoch that passes this many seconds of training.
    max_seconds: float | None = Field(None, gt=0)
    # Operand lengths (digits) to test on after training, far past the training lengths.
    eval_lengths: tuple[Annotated[int, Field(ge=1, le=10_000)], ...] = ()
    # Tasks the model never trains on, scored on their test split after training (exact_match_on_<task>).
    eval_tasks: tuple[str, ...] = ()
    # Character encodings (seq2seq): the defaults are the tutorial's. integer: codes into a trained
    # Embedding (targets as integer codes too); reverse: read the input backwards (Keras addition_rnn);
    # per_term: each operand left-padded to the widest operand; mask: pad steps skipped by the encoder.
    encoding: Literal["onehot", "integer"] = "onehot"
    reverse: bool = False
    padding: Literal["left", "per_term"] = "left"
    mask: bool = False
    embedding_dim: int = Field(16, ge=1)
    # digitwise: a hidden ReLU layer before the output digit; 0 for none (2 terms need none, and
    # generalise further without it).
    head_units: int = Field(0, ge=0)
    # Decoders (attention, transformer): how the answer is written. plain: most significant digit first;
    # reversed: least significant first (the default); steps: the worked steps first, then the answer;
    # rewrite: a step model, writing the expression after one reduction, called again until a number remains.
    answer: Literal[ANSWERS] | None = None
    # mirrored: build and train under tf.distribute.MirroredStrategy, one replica per visible GPU (or the
    # CPU alone); the batch is split across replicas, so batch_size stays the global batch.
    distribute: Literal["none", "mirrored"] = "none"
    # What this experiment tries, in a sentence: the MLflow run's description starts with it.
    description: str | None = Field(None, min_length=1, max_length=1000)
    # Train once per seed (one stage, one process) and report the spread; unset means the top-level seed.
    seeds: tuple[Annotated[int, Field(ge=0, lt=2**32)], ...] | None = Field(None, min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...] | None) -> tuple[int, ...] | None:
        repeated = sorted({s for s in seeds or () if seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"each seed once; {', '.join(map(str, repeated))} repeated (got {list(seeds)})")
        return seeds

    @model_validator(mode="after")
    def _units_fit_model(self) -> Experiment:
        if self.model == "seq2seq" and len(self.units) != 2:
            raise ValueError("seq2seq takes units: [encoder, decoder], two numbers")
        if self.model == "transformer" and (len(set(self.units)) != 1 or self.units[0] % 4):
            raise ValueError("transformer takes units: [width, ...], one equal entry per block, a multiple of 4 heads")
        if self.eval_tasks and self.model in (*NUMBER_MODELS, "digitwise"):
            raise ValueError(f"eval_tasks needs a model that reads expressions as characters; {self.model} does not")
        if self.eval_lengths and self.model != "digitwise":
            raise ValueError("eval_lengths needs a length-agnostic model (digitwise)")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        if self.oversample and not self.samples_per_epoch:
            raise ValueError("oversample draws each epoch's samples; set samples_per_epoch")
        if self.answer == "rewrite" and self.model != "transformer":
            raise ValueError(f"answer: rewrite (a step model) is a transformer's framing; {self.model} has none")
        if self.answer is not None and self.model not in DECODER_MODELS:
            raise ValueError(f"answer: {self.answer} needs a decoder that writes answers of any length "
                             f"({' or '.join(DECODER_MODELS)}); {self.model} writes a fixed-width answer")
        return self

    @property
    def is_sequence(self) -> bool:
        return self.model in SEQUENCE_MODELS

    @property
    def framing(self) -> str:
        """How the model sees the text, in a few words: 'onehot', 'integer, reversed, masked', 'digit columns'."""
        if self.model in NUMBER_MODELS:
            return "numbers"
        if self.model in DECODER_MODELS:
            return f"{FIXED_ENCODINGS[self.model]}, answer {self.answer or 'reversed'}"
        if self.model in FIXED_ENCODINGS:
            return FIXED_ENCODINGS[self.model]
        flags = ["reversed" if self.reverse else "", "per-term padding" if self.padding == "per_term" else "",
                 "masked" if self.mask else ""]
        return ", ".join([self.encoding, *filter(None, flags)])


class Params(Strict):
    seed: int = Field(ge=0, lt=2**32)
    # The Keras backend every model trains and is scored on (pipeline/backend.py).
    backend: Literal[tuple(BACKENDS)] = DEFAULT_BACKEND
    tasks: dict[str, Task] = Field(min_length=1)
    experiments: dict[str, Experiment] = Field(min_length=1)
    # Studies: name -> experiments of one task, the first the baseline, each other differing from it in
    # one setting (the same one); the report says whether each difference is real (pipeline/stats.py).
    studies: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _experiments_match_tasks(self) -> Params:
        for name in self.tasks:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"task name {name!r}: use lowercase letters, digits and '_'")
        for name, exp in self.experiments.items():
            if exp.task not in self.tasks:
                raise ValueError(f"experiments.{name}.task: {exp.task!r} is not a task; known: {', '.join(self.tasks)}")
            if not (self.tasks[exp.task].train_size and self.tasks[exp.task].val_size):
                raise ValueError(f"experiments.{name}.task: {exp.task!r} has no training or validation problems "
                                 "(train_size or val_size 0); score on such a task with eval_tasks")
            for other in exp.eval_tasks:
                if other not in self.tasks:
                    raise ValueError(f"experiments.{name}.eval_tasks: {other!r} is not a task; "
                                     f"known: {', '.join(self.tasks)}")
            pattern = rf"{re.escape(exp.task)}-{exp.model}(-[a-z0-9_]+)?"
            task = self.tasks[exp.task]
            plain_sums = task.ops == "+" and not task.brackets and (task.min_terms or task.terms) == task.terms
            if exp.model in NUMBER_MODELS and not plain_sums:
                raise ValueError(f"experiments.{name}.model: {exp.model} reads a fixed number of operands to add; "
                                 f"task {exp.task!r} has other operations, brackets or a varying number of terms")
            if exp.model == "digitwise" and (task.ops != "+" or task.brackets):
                raise ValueError(f"experiments.{name}.model: digitwise adds digit columns; task {exp.task!r} "
                                 "has other operations or brackets")
            for op in exp.oversample:
                if op not in task.ops:
                    raise ValueError(f"experiments.{name}.oversample: {op!r} is not an operation of task {exp.task!r} "
                                     f"(its ops: {' '.join(task.ops)})")
            if not re.fullmatch(pattern, name):
                raise ValueError(f"experiment name {name!r}: must be <task>-<model>[-variant], "
                                 f"here {exp.task}-{exp.model}[-...]")
        for name in self.studies:
            self.study_setting(name)
        return self

    def seeds_of(self, name: str) -> tuple[int, ...]:
        """The seeds an experiment trains under: its own list, else the top-level seed."""
        return self.experiment(name).seeds or (self.seed,)

    def study_setting(self, name: str) -> str:
        """The one setting a study's experiments differ in; ValueError naming the key otherwise."""
        names, key = self.studies[name], f"studies.{name}"
        if len(names) < 2 or len(set(names)) < len(names):
            raise ValueError(f"{key}: two or more distinct experiments, the baseline first (got {list(names)})")
        for exp_name in names:
            if exp_name not in self.experiments:
                raise ValueError(f"{key}: {exp_name!r} is not an experiment; known: {', '.join(self.experiments)}")
        first, *others = (self.experiments[n].model_dump(exclude={"description", "seeds"}) for n in names)
        changed = set()
        for exp_name, other in zip(names[1:], others):
            differ = [k for k in first if first[k] != other[k]]
            if "task" in differ:
                raise ValueError(f"{key}: {exp_name} is of task {other['task']!r}, {names[0]} of {first['task']!r}; "
                                 "a study compares experiments of one task")
            if len(differ) != 1:
                raise ValueError(f"{key}: {exp_name} differs from {names[0]} in {len(differ)} settings "
                                 f"({', '.join(differ) or 'none'}); a study changes exactly one")
            changed.update(differ)
        if len(changed) > 1:
            raise ValueError(f"{key}: its experiments change different settings ({', '.join(sorted(changed))}); "
                             "a study changes one")
        return changed.pop()

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
        nested = len(first["loc"]) > 1
        section = {"tasks": Task, "experiments": Experiment}.get(first["loc"][0], Params) if nested else Params
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
