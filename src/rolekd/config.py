"""Typed, validated experiment description loaded from YAML.

An experiment is data, never code: YAML is read with ``yaml.safe_load`` and every section is a
pydantic model with ``extra="forbid"``, so an unknown key, a wrong type or an impossible value is
a one-line :class:`ConfigError` naming the field and what was expected.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

PACKAGED_CONFIGS = Path(__file__).parent / "configs"

Scalar = int | float | str | bool
Role = Literal["teacher", "student"]


class ConfigError(ValueError):
    """A user's config is wrong; the message is one line naming the field and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _registered_dataset(name: str) -> str:
    """A dataset is checked against its registry (on this floor) when a config is read; models, KD methods and
    agents, registered on higher floors, are checked by ``pipeline.preflight.validate_names`` before data loads."""
    from .data import available_datasets

    if name not in available_datasets():
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(available_datasets())}")
    return name


class DataConfig(_Section):
    dataset: str = Field("digits", description="a registered dataset: digits, cifar10, cifar100, folder, or your own")
    root: str | None = Field(None, description="image folder for dataset=folder (root/<class>/*.png|jpg)")
    image_size: int = Field(32, ge=8, le=1024, description="images of a folder dataset are resized to this")
    train_subset: int | None = Field(
        None, ge=1, description="every row trains on a class-balanced subset of this many training images (CPU "
        "budgets) instead of all of them; the search trains on data.reduced_train of these images"
    )
    reduced_train: int = Field(
        4000, ge=1, description="the search's training images: a class-balanced subset of the images every row "
        "trains on (PBA and the paper: 4,000)"
    )
    reduced_val: int = Field(
        36000, ge=1, description="the search's validation images, on which its trials are ranked; from where, "
        "data.search_val says (the paper: 36,000; PBA's and role-kd's code: the other 46,000). One accuracy on "
        "n images has a standard error up to 50/sqrt(n) points: 10,000 images for 0.5"
    )
    search_val: Literal["rows", "held_out"] = Field(
        "rows", description="where the search's data.reduced_val validation images come from. rows: the rows' "
        "training images the search does not train on, as PBA and role-kd ranked their searches and then retrained "
        "on all 50,000 images (the paper's protocol; the rows train on the images the search ranks on). held_out: "
        "a class-balanced split of the training set that no row trains on (drawn after data.train_subset, from the "
        "images outside it; without a subset the rows train on the rest), as in PBA's reduced-CIFAR-10 runs. "
        "Neither ever reads the test split"
    )
    split_seed: int = Field(0, description="seed of every split of the training set: train_subset, the search's "
                            "training images and its validation images")
    crop_padding: int = Field(4, ge=0, le=64, description="random-crop padding in pixels; 0 disables crop")
    flip: bool = Field(True, description="random horizontal flip after the crop, in every training and search trial")
    cutout: int = Field(
        0, ge=0, description="side of the final cutout square in pixels at 32x32 for rows WITHOUT a searched "
        "schedule (the paper's baselines: crop + flip only); 0 disables"
    )
    schedule_cutout: int | None = Field(
        None, ge=0, description="cutout after the policy, crop and flip in search trials and rows trained with a "
        "searched schedule, as PBA/role-kd did; default per dataset (CIFAR-10 16, CIFAR-100 8, folder 16, digits 0)"
    )
    eval_batch_size: int = Field(
        1000, ge=1, description="images per batch when evaluating on the test or validation split (memory, not results)"
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _registered_dataset(v)

    @property
    def resolved_schedule_cutout(self) -> int:
        """``schedule_cutout``, or the dataset's default: PBA's CIFAR-10 setting (16), role-kd's CIFAR-100 one (8,
        as its final stage-β training ran), none for digits' upscaled 8x8 glyphs (see ``rolekd.data``)."""
        if self.schedule_cutout is not None:
            return self.schedule_cutout
        from .data import dataset_spec

        return dataset_spec(self.dataset).schedule_cutout


class TrainConfig(_Section):
    epochs: int = Field(
        200, ge=1, description="epochs of this role's trainings (and of its search trials unless search.epochs is "
        "set); the lr schedule spans them"
    )
    batch_size: int = Field(128, ge=1, description="training images per optimiser step (search trials too)")
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="sgd (with momentum and nesterov) or adam (eps 1e-5; momentum and nesterov unused)"
    )
    lr: float = Field(0.1, gt=0, description="base learning rate, multiplied over the epochs by lr_schedule")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum; 0: none")
    nesterov: bool = Field(True, description="Nesterov momentum for SGD (only with momentum > 0)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay of the optimiser (sgd and adam)")
    lr_schedule: Literal["step", "cosine", "constant"] = Field(
        "step", description="step: lr x gamma at each milestone; cosine: anneal to 0 over the epochs, step by step; "
        "constant: lr throughout"
    )
    milestones: list[float] = Field([0.3, 0.6, 0.9], description="step decay points as fractions of the epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="lr factor at each milestone (lr_schedule: step)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy (task) term")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm (PBA used 5.0)")
    amp: bool | None = Field(None, description="bf16 autocast; default: on with CUDA (never on the CPU)")
    channels_last: bool | None = Field(None, description="channels_last memory format; default: on (CUDA and CPU: "
                                       "faster on both where measured, benchmarks/README.md)")
    compile: bool = Field(False, description="torch.compile the model (pays off only for long runs)")
    cpus: float | None = Field(
        None, gt=0, description="CPUs one training of this role takes when rolekd run trains several at once on Ray; "
        "default all of a machine's (one at a time on the CPU), or with CUDA an equal share per GPU"
    )
    gpus: float | None = Field(None, ge=0, description="GPUs one training takes; default 1 with CUDA, else 0")
    eval_every: int = Field(
        1, ge=1, description="evaluate on the test split every this many epochs and at the last (a large test split "
        "can cost more than a small training set's epoch); search trials evaluate every epoch, as PBT compares them"
    )

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v) or v != sorted(v):
            raise ValueError("expected increasing fractions of the epochs, each in (0, 1)")
        return v


BITS_EXPECTED = "expected a bit-width in 1..8 or 32 (full precision)"


def _check_bits(v: int) -> int:
    if not (1 <= v <= 8 or v == 32):
        raise ValueError(f"{BITS_EXPECTED}, got {v}")
    return v


def _whole_bits(v: Any) -> Any:
    """Before pydantic's int parsing, which names neither the range (2.5) nor refuses ``true`` (1 bit)."""
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise ValueError(f"{BITS_EXPECTED}, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{BITS_EXPECTED}, got {v!r}")
    return v


MODEL = ("a registered model: resnet8, resnet20, resnet32, resnet56, resnet18, alexnet, cnn, mlp, or your own "
         "(@register_model in an --import module)")
MODEL_ARGS = ("keyword arguments of the model's builder, e.g. {width: 8}; in_channels and image_size come from the "
              "data when the builder takes them")


class NetworkConfig(_Section):
    model: str = Field("resnet18", description=MODEL)
    model_args: dict[str, Scalar] = Field(default_factory=dict, description=MODEL_ARGS)
    checkpoint: str | None = Field(None, description="initial weights (a rolekd checkpoint or a bare state_dict)")
    train: TrainConfig = Field(default_factory=TrainConfig, description="this network's training recipe")
    taps: list[str] | None = Field(None, description="module paths of feature taps; default per architecture")


class StudentConfig(NetworkConfig):
    model: str = Field("resnet18", description=MODEL)
    w_bits: int = Field(
        32, description="DoReFa weight bits (1-8), or 32: full precision; the first and last layers stay full precision"
    )
    a_bits: int = Field(
        32, description="DoReFa activation bits (1-8), or 32: full precision; the input and the classifier's input "
        "stay full precision"
    )
    init_from: Literal["teacher", "scratch"] = Field(
        "teacher", description="teacher: a student trained with a teacher (KD or warm-start rows) starts from its "
        "weights when the architectures match (paper 5.1); scratch: always from random weights"
    )
    agents: list[str] = Field(
        default_factory=list, description="augmentation agents after the schedule: backward, hard or your own "
        "(settings in the agents section)"
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, weight_decay=1e-5),
        description="the student's training recipe (default: adam, lr 1e-3, weight_decay 1e-5)",
    )

    @field_validator("w_bits", "a_bits", mode="before")
    @classmethod
    def _bits_are_whole(cls, v: Any) -> Any:
        return _whole_bits(v)

    @field_validator("w_bits", "a_bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        return _check_bits(v)


class MethodSettings(_Section):
    """Settings that apply only when ``distill.method`` is this method (they win over the section's)."""

    lam: float | None = Field(None, ge=0, description="weight of the KD term for this method (wins over distill.lam)")
    clip_grad: bool | None = Field(
        None, description="KD-gradient clipping of this method (wins over distill.clip_grad)"
    )
    temperature: float | None = Field(
        None, gt=0, description="temperature for this method (wins over distill.temperature)"
    )
    options: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="this method's options, merged over distill.options"
    )


class DistillConfig(_Section):
    method: str = Field("iikd", description="soft | dml | rkd | mhgd | kdsvd | iikd | dkd | none")
    lam: float | None = Field(
        None, ge=0, description="weight of the KD term (lambda in Eq. 1); default: the method's (II-KD 0.4, others 1.0)"
    )
    lam_decay: float = Field(0.5, gt=0, le=1, description="lambda is multiplied by this ...")
    lam_every: float = Field(0.3, gt=0, le=1, description="... every this fraction of the epochs")
    clip_grad: bool | None = Field(
        None, description="clip the KD gradient to the task gradient's norm; default: the method's (II-KD, MHGD, KD-SVD on)"
    )
    temperature: float | None = Field(
        None, gt=0, description="for the methods that have one (soft, dml, dkd); default: the method's own"
    )
    options: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="the method's own options (e.g. rkd: embedding, distance_weight, "
        "angle_weight); an unknown one is an error naming those accepted"
    )
    per_method: dict[str, MethodSettings] = Field(
        default_factory=dict, description="settings per method name, applied when distill.method is that method "
        "(e.g. per_method: {dml: {options: {freeze_peer: true}}})"
    )
    init_epochs: int | None = Field(
        None, ge=0, description="epochs of MHGD's attention-network initialisation on the teacher's features; "
        "default 20% of the student's epochs (Lee & Song: 40 of 200); 0: distil through the untrained network (role-kd)"
    )


class SearchConfig(_Section):
    population: int = Field(16, ge=2, description="trials PBA trains side by side, each with its own policy (PBA: 16)")
    epochs: int | None = Field(
        None, ge=1, description="epochs of each trial on the reduced split; default the searched role's train.epochs, "
        "as PBA searched for as long as it retrained (200)"
    )
    perturbation_interval: int = Field(
        3, ge=1, description="epochs of a generation: every live trial trains this many epochs, then the "
        "population is ranked at that one epoch, exploits and explores, and its state is saved for --resume"
    )
    quantile: float = Field(
        0.25, gt=0, le=0.5, description="at the end of each generation every trial in this bottom fraction of the "
        "population clones the state of one in the top fraction (weights, optimiser, policies so far), then explores "
        "its policy (PBA: 0.25)"
    )
    resample_probability: float = Field(
        0.2, ge=0, le=1, description="explore: chance that each of a cloned policy's 60 integers is drawn anew "
        "instead of shifted by up to 3 (PBA: 0.2)"
    )
    cpus_per_trial: float = Field(
        1.0, gt=0, description="CPUs Ray gives each trial, and its torch threads (floor, at least 1: part "
        "of what a reproducible search must keep); the population trains all at once when population x this fits, "
        "else in turns within each generation"
    )
    gpus_per_trial: float = Field(
        0.0, ge=0, description="share of a GPU per trial (0.25: four trials a GPU); needed when the device is CUDA"
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at once at most in a local Ray (its CPUs are capped to this x cpus_per_trial); "
        "default as many as fit"
    )
    address: str | None = Field(None, description="join this Ray cluster instead of starting a local one")


class BackwardAgentConfig(_Section):
    """Backward-pass samples (Jafari et al. 2023): defaults chosen by rolekd, not by the paper."""

    steps: int = Field(1, ge=1, description="gradient-ascent steps on the input")
    step_size: float = Field(0.1, gt=0, description="step size in normalised input units")
    step_type: Literal["raw", "sign", "l2"] = Field(
        "sign", description="ascent direction: the raw gradient, its sign, or the gradient L2-normalised per sample"
    )
    epsilon: float | None = Field(None, gt=0, description="project onto an L-inf ball of this radius")
    divergence: Literal["kl", "mse"] = Field(
        "kl", description="what the samples maximise: KL(teacher || student) at temperature, or the MSE of the logits"
    )
    temperature: float = Field(4.0, gt=0, description="of the KL divergence (divergence: kl)")
    fraction: float = Field(0.5, gt=0, le=1, description="auxiliary samples added, as a fraction of the batch")


class HardAgentConfig(_Section):
    """HARD (Nix et al. 2023) spatial-transformer augmentor: defaults chosen by rolekd, not by the paper."""

    augmentor: str = Field("spatial", description="registered augmentor; 'spatial' is the affine spatial transformer")
    augmentor_args: dict[str, Scalar] = Field(default_factory=dict, description="settings of a user-registered augmentor")
    mode: Literal["affine", "translation"] = Field("affine", description="spatial: full affine, or translation only")
    max_translation: float = Field(0.25, ge=0, le=1, description="fraction of the image side")
    max_rotation: float = Field(30.0, ge=0, le=180, description="degrees")
    max_scale: float = Field(0.2, ge=0, lt=1, description="scale in 1 +- this")
    max_shear: float = Field(0.3, ge=0, le=1, description="bound of the shear in x and in y (mode: affine)")
    init_std: float = Field(0.1, gt=0, description="initial std of the transformation Gaussian (tanh pre-activation units)")
    consistency: float = Field(1.0, ge=0, description="weight of the teacher-consistency term")
    update_every: int = Field(1, ge=1, description="student steps per augmentor step")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate of the augmentor")
    temperature: float = Field(4.0, gt=0, description="of the disagreement and teacher-consistency KLs")
    fraction: float = Field(0.5, gt=0, le=1, description="augmented samples added, as a fraction of the batch")


class AgentsConfig(_Section):
    backward: BackwardAgentConfig = Field(
        default_factory=BackwardAgentConfig, description="settings of the backward agent (student.agents: [backward])"
    )
    hard: HardAgentConfig = Field(
        default_factory=HardAgentConfig, description="settings of the hard agent (student.agents: [hard])"
    )


class StageAlphaConfig(_Section):
    schedule: str | None = Field(
        None, description="reuse this teacher schedule instead of searching: a schedule JSON, the folder of a "
        "rolekd run whose stage α searched it (its stage_alpha/schedule.json), or a packaged schedule name "
        "(pba-rcifar10, role-kd-cifar100-resnet18-w2a2)"
    )
    note: str | None = Field(
        None, description="why the schedule is given (shown in the report and in the error when it is missing), "
        "e.g. the paper's transfer of the CIFAR-10 policy to CIFAR-100 (§5.1)"
    )


Baseline = Literal[
    "teacher_vanilla", "student_vanilla", "student_teacher_schedule", "student_warm_start", "student_kd",
    "student_kd_teacher_schedule",
]
BASELINES: tuple[str, ...] = Baseline.__args__


class PipelineConfig(_Section):
    baselines: list[Baseline] = Field(
        default_factory=lambda: list(BASELINES),
        description="rows trained besides stage α and β: teacher_vanilla (teacher, crop + flip), student_vanilla "
        "(student from scratch, no KD), student_teacher_schedule (student from scratch + A_T, no KD: Table 2's "
        "'teacher after stage α' at low bits), student_warm_start (warm-started from the teacher, no KD), "
        "student_kd (KD, crop + flip), student_kd_teacher_schedule (KD + A_T)",
    )
    stage_alpha: StageAlphaConfig = Field(
        default_factory=StageAlphaConfig, description="stage α's teacher schedule: searched, or given"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], description="every row trains once per seed (the report: mean ± std and paired "
        "differences); the searches run once, stage β's on the first seed's teacher"
    )
    search_seeds: list[int] | None = Field(
        None, min_length=1, description="stage β searched once per search seed, independently (its own trials, "
        "exploits and explores): one A_S and its rows per search, and the report's spread between searches next to "
        "the spread between retrain seeds; default one search with `seed`"
    )
    student_schedules: list[str] = Field(
        default_factory=list, description="more KD student rows, one per schedule nobody in this run searched "
        "(the retrain half alone): a packaged schedule's name (pba-rcifar10, role-kd-cifar100-resnet18-w2a2) or a "
        "schedule JSON, stretched to the student's epochs"
    )
    extra_cutouts: list[int] = Field(
        default_factory=list, description="train every student row with a schedule again with each of these cutout "
        "sides besides data.schedule_cutout's (a side equal to it adds nothing), e.g. [0]: also without PBA's cutout; "
        "the search trials use data.schedule_cutout"
    )
    max_parallel: int | None = Field(
        None, ge=1, description="trainings (rows x seeds) at once at most; default as many as the trainings' "
        "cpus/gpus fit on this machine or the cluster (search.address); 1: one after another in this process"
    )
    experiment: Literal["role_wise", "shift_equivariance"] = Field(
        "role_wise", description="role_wise: the paper's stages and baselines; shift_equivariance: HARD's toy"
    )

    @field_validator("search_seeds", "extra_cutouts", "student_schedules")
    @classmethod
    def _distinct(cls, v: list | None) -> list | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"expected distinct entries, got {v}")
        return v

    @field_validator("extra_cutouts")
    @classmethod
    def _sides(cls, v: list[int]) -> list[int]:
        if any(c < 0 for c in v):
            raise ValueError(f"expected cutout sides >= 0 pixels, got {v}")
        return v


class TrainingConfig(_Section):
    """The sections one training reads: a row of a run, ``rolekd train``/``distill``, and every search trial
    (which receives only these, typed, never the searches' or the run's own settings)."""

    name: str = Field("experiment", description="the experiment's name: default output folder runs/<name>, the "
                      "report's title")
    seed: int = Field(
        0, description="seed of rolekd train and distill and of the searches (each trial's seed derived from it and "
        "the trial's index); rolekd run's rows use pipeline.seeds, its stage-β searches pipeline.search_seeds if set"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when there is one, else the CPU; cuda fails without one; cpu keeps every "
        "training and trial off GPUs"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset, its splits and the baseline "
                             "augmentation")
    teacher: NetworkConfig = Field(default_factory=NetworkConfig, description="the teacher network and its training")
    student: StudentConfig = Field(
        default_factory=StudentConfig, description="the student network: its bits, start, agents and training"
    )
    distill: DistillConfig = Field(
        default_factory=DistillConfig, description="the KD objective of every student trained with a teacher"
    )
    agents: AgentsConfig = Field(default_factory=AgentsConfig, description="settings of the agents student.agents names")

    def network(self, role: Role) -> NetworkConfig:
        """The section ``role`` trains with (``teacher`` or ``student``): the one answer to "which network?"."""
        if role not in ("teacher", "student"):
            raise ValueError(f"unknown role {role!r}; expected 'teacher' or 'student'")
        return self.teacher if role == "teacher" else self.student

    @model_validator(mode="after")
    def _dataset_root(self) -> "TrainingConfig":
        from .data import dataset_spec

        if dataset_spec(self.data.dataset).needs_root and not self.data.root:
            raise ValueError(f"data.root: dataset {self.data.dataset!r} needs data.root, the folder holding "
                             "<class>/ subfolders")
        return self


class ExperimentConfig(TrainingConfig):
    """A whole experiment: the trainings' sections, the searches and the run's rows and seeds."""

    search: SearchConfig = Field(
        default_factory=SearchConfig, description="PBA's schedule search (rolekd search; rolekd run's stages α and β)"
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig, description="rolekd run's rows, seeds and stage α's schedule"
    )

    def training(self) -> TrainingConfig:
        """Only the trainings' sections (the same objects, validated already): what a search trial receives."""
        return TrainingConfig.model_construct(**{k: getattr(self, k) for k in TrainingConfig.model_fields})

    def search_epochs(self, role: Role) -> int:
        """A trial's epochs when searching ``role``'s schedule: ``search.epochs``, or the role's own length."""
        return self.search.epochs if self.search.epochs is not None else self.network(role).train.epochs


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _suggestion([str(p) for p in err["loc"]])
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    got = err.get("input")
    shown = "" if err["type"] in ("extra_forbidden", "missing", "value_error") or isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {loc}: {msg}{shown}{more}"


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo, bool]]:
    """Every key path of a config model in config order, with its field and whether it is a section; sections come
    before their own fields (``pipeline``, then ``pipeline.seeds``)."""
    for name, field in model.model_fields.items():
        sub = field.annotation
        section = isinstance(sub, type) and issubclass(sub, BaseModel)
        yield prefix + name, field, section
        if section:
            yield from _fields(sub, f"{prefix}{name}.")


def _field_paths(model: type[BaseModel]) -> list[str]:
    """Every key path of a config model, sections included (``pipeline``, ``pipeline.seeds``)."""
    return [path for path, _, _ in _fields(model)]


@dataclass(frozen=True)
class FieldDoc:
    """One key of a config as ``rolekd config`` shows it: its value, its default there, and what it means."""

    path: str
    value: Any
    default: Any
    description: str
    section: bool = False  # a section's line: its fields follow, value and default are None


def field_docs(cfg: ExperimentConfig) -> list[FieldDoc]:
    """Every key of ``cfg`` with its value (plain JSON), its default in that place of the config (a student's
    ``train`` has the student's defaults) and its description: what a user reads instead of this file."""
    values, defaults = cfg.model_dump(mode="json"), ExperimentConfig().model_dump(mode="json")
    return [FieldDoc(path, None if section else _at(values, path), None if section else _at(defaults, path),
                     field.description or "", section)
            for path, field, section in _fields(type(cfg))]


def _at(values: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        values = values[key]
    return values


def _suggestion(loc: list[str]) -> str:
    """``; did you mean …?`` for a misspelt key (``epochz``) or one in the wrong section (``seeds``)."""
    paths = _field_paths(ExperimentConfig)
    parent, key = ".".join(loc[:-1]), loc[-1]
    siblings = [p.rsplit(".", 1)[-1] for p in paths if p.rpartition(".")[0] == parent]
    elsewhere = sorted(p for p in paths if p.rsplit(".", 1)[-1] == key)
    if elsewhere:
        return f"; did you mean {' or '.join(elsewhere[:3])}?"
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.75)
    return f"; did you mean {'.'.join([*loc[:-1], close[0]])}?" if close else ""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], c) with c typed by YAML (``3`` int, ``true`` bool, ``[1,2]`` list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. teacher.train.epochs=10")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A path on disk, or the name of a packaged config (``demo``, ``paper/table2_cifar10_resnet18``)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / (str(name) if str(name).endswith(".yaml") else f"{name}.yaml")
    if packaged.is_file():
        return packaged
    raise ConfigError(f"config {str(name)!r} not found: expected a YAML file or a packaged config name such as 'demo'")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate a config; ``None`` loads the embedded demo."""
    source = resolve_config_path(path or "demo")
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"{source}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:  # 0 bytes or only comments: a mistake, never "the defaults" (a ResNet-18 for 200 epochs)
        raise ConfigError(f"{source}: the file is empty (or only comments); expected a mapping of sections "
                          "(data, teacher, student, ...) — for the embedded demo, name the packaged config 'demo'")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, teacher, student, ...)")
    return config_from_dict(apply_overrides(raw, overrides or []), str(source))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_differences(saved: ExperimentConfig, current: ExperimentConfig) -> list[str]:
    """``path (saved X, now Y)`` for each field that differs, in config order: a refused resume says what changed."""
    return [f"{path} (saved {a!r}, now {b!r})"
            for path, a, b in _diff(saved.model_dump(mode="json"), current.model_dump(mode="json"))]


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in [*a, *(k for k in b if k not in a)]:
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def require_same_config(saved_path: str | Path, cfg: ExperimentConfig, folder: str | Path, shown: int = 3) -> None:
    """Refuse to resume ``folder`` with a config other than the one saved in it, naming the first fields that differ."""
    diffs = config_differences(load_config(saved_path), cfg)
    if diffs:
        more = f" (+{len(diffs) - shown} more)" if len(diffs) > shown else ""
        raise ConfigError(
            f"{folder} was made with another config: {'; '.join(diffs[:shown])}{more} (saved in {saved_path}); "
            "expected the same config to resume — choose another --out for a new experiment"
        )
