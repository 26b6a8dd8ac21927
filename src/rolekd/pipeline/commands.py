"""Every command's work, one function each: what ``rolekd COMMAND`` runs and what ``import rolekd`` offers.

The CLI only parses arguments, shows progress and maps errors to exit codes; a notebook or script calls
the same functions and gets result objects back (accuracies, paths, the schedule) instead of printed text::

    import rolekd
    teacher = rolekd.train("demo", out="runs/t", overrides=["teacher.train.epochs=3"])
    student = rolekd.distill("demo", teacher=teacher.checkpoint, out="runs/s")
    print(rolekd.evaluate(student.checkpoint).accuracy)

``config`` is a YAML path, a packaged config's name (``demo``, ``cpu/cifar10_resnet8_w2a2``), a dict, or an
:class:`~rolekd.config.ExperimentConfig`; ``overrides`` are ``KEY=VALUE`` strings as ``--set`` takes them.
``progress`` is a factory ``(label, epochs) -> context manager giving a per-epoch callback`` (the CLI's live
bar); ``say`` receives one-line notes (default: none).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Sequence

from ..config import ExperimentConfig, FieldDoc, Role
from .folders import releases_claims

ConfigLike = ExperimentConfig | str | Path | Mapping[str, Any] | None
ProgressFactory = Callable[[str, int], ContextManager[Callable | None]]
Say = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def _no_progress(label: str, epochs: int) -> ContextManager[None]:
    return nullcontext(None)


def resolve_config(config: ConfigLike, overrides: Sequence[str] = (), imports: Sequence[str] = (),
                   default: str | None = None) -> ExperimentConfig:
    """A config from any of the accepted forms, with ``overrides`` applied; ``imports`` (files or dotted
    modules that register models) are imported first, so the config may name what they register."""
    from ..config import apply_overrides, config_from_dict, load_config
    from ..plugins import import_user_modules

    import_user_modules(list(imports))
    if isinstance(config, ExperimentConfig):
        if not overrides:
            return config
        config = config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return config_from_dict(apply_overrides(dict(config), list(overrides)), "config")
    return load_config(config if config is not None else default, list(overrides))


def out_folder(cfg: ExperimentConfig, out: str | Path | None, role: str) -> Path:
    """``out``, default ``runs/<config name>/<role>``; a file in its way is refused before any data is loaded."""
    from ..atomic import check_folder_path

    return check_folder_path(Path(out) if out is not None else Path("runs") / cfg.name / role, "--out")


# ---- training one network ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    """One trained network: its last-epoch test accuracy (what the report uses), best epoch, and files."""

    role: str
    out: Path
    accuracy: float
    best_accuracy: float
    best_epoch: int
    history: list[dict[str, Any]]

    @property
    def checkpoint(self) -> Path:
        """The final weights (``last.pt``): what a teacher for ``distill`` or an ``export`` takes."""
        return self.out / "last.pt"


def train(config: ConfigLike, *, role: Role = "teacher", out: str | Path | None = None,
          schedule: str | Path | None = None, resume: bool = False, data_dir: str | None = None,
          overrides: Sequence[str] = (), imports: Sequence[str] = (), progress: ProgressFactory | None = None,
          say: Say = _silent) -> TrainResult:
    """``rolekd train``: the configured teacher (or, with ``role="student"``, the student without KD) on labels,
    with an optional schedule (a file or a packaged schedule's name)."""
    cfg = resolve_config(config, overrides, imports)
    return _train_role(cfg, role, out_folder(cfg, out, role), schedule, None, resume, data_dir, progress, say)


def distill(config: ConfigLike, teacher: str | Path, *, out: str | Path | None = None,
            schedule: str | Path | None = None, resume: bool = False, data_dir: str | None = None,
            overrides: Sequence[str] = (), imports: Sequence[str] = (), progress: ProgressFactory | None = None,
            say: Say = _silent) -> TrainResult:
    """``rolekd distill``: the configured student with KD (``distill`` section) from a fixed, trained teacher."""
    cfg = resolve_config(config, overrides, imports)
    return _train_role(cfg, "student", out_folder(cfg, out, "student"), schedule, teacher, resume, data_dir,
                       progress, say)


@releases_claims
def _train_role(cfg: ExperimentConfig, role: Role, out: Path, schedule: str | Path | None,
                teacher_path: str | Path | None, resume: bool, data_dir: str | None,
                progress: ProgressFactory | None, say: Say) -> TrainResult:
    from .folders import claim_folder, claim_teacher
    from .preflight import Training, preflight, validate_names
    from .setup import prepare
    from .stages import augmentation_cutout, load_teacher, train_network

    validate_names(cfg)
    loaded = _load_schedule(schedule)
    claim_folder(cfg, out, resume, "last.pt")  # a folder of other settings fails before any data loads
    prep = prepare(cfg, data_dir)
    teacher = load_teacher(teacher_path, cfg, prep) if teacher_path is not None else None
    if teacher_path is not None:
        claim_teacher(out, teacher_path, "last.pt")
    net = cfg.network(role)
    aug = "crop + flip" if loaded is None else f"schedule {schedule} + crop + flip"
    cutout = augmentation_cutout(cfg, loaded is not None)
    aug += f" + cutout {cutout}" if cutout else ""
    if teacher is None:
        say(f"training the {role} {net.model} on {prep.full.name} ({len(prep.full.train)} train / "
            f"{len(prep.full.test)} test images, {prep.device}); augmentation: {aug}")
    else:
        s = cfg.student
        say(f"distilling {teacher.meta['model']} -> {s.model} (W/A {s.w_bits}/{s.a_bits}) with {cfg.distill.method} "
            f"on {prep.full.name} ({prep.device}); augmentation: {aug}")
    agents = cfg.student.agents if role == "student" else ()
    preflight(cfg, prep, [Training(f"{role} training", role, teacher is not None, False, tuple(agents),
                                   loaded is not None)], teacher, say=say)
    epochs = net.train.epochs
    with (progress or _no_progress)(role, epochs) as callback:
        fit = train_network(cfg, prep, role, out, schedule=loaded, teacher=teacher, agents=agents, epochs=epochs,
                            resume=resume, callback=callback)
    return TrainResult(role, out, fit.last.get("val_acc", float("nan")), fit.best_acc, fit.best_epoch, fit.history)


def _load_schedule(path: str | Path | None):
    """A schedule JSON or a packaged schedule's name (``pba-rcifar10``); None: baseline augmentation only."""
    if not path:
        return None
    from ..augment.schedule import Schedule

    return Schedule.load(path)


# ---- search and the whole pipeline --------------------------------------------------------------------


def search(config: ConfigLike, role: Role, *, teacher: str | Path | None = None, out: str | Path | None = None,
           address: str | None = None, resume: bool = False, data_dir: str | None = None,
           overrides: Sequence[str] = (), imports: Sequence[str] = (), progress: bool = False):
    """``rolekd search``: PBA for one role (stage α: ``teacher``; stage β: ``student`` with KD from ``teacher``).
    Returns the :class:`~rolekd.pba.SearchResult` (schedule, best trial, its accuracy, files)."""
    from .preflight import validate_names
    from .search_stage import search_command

    cfg = resolve_config(config, overrides, imports)
    validate_names(cfg)  # as train and run do: before the data and the teacher load
    return search_command(cfg, role, teacher, out_folder(cfg, out, f"search_{role}"), address=address,
                          resume=resume, data_dir=data_dir, progress=progress, claim=True)


@dataclass
class RunResult:
    """A whole ``rolekd run``: its folder and the report (rows over seeds, paired differences, searches)."""

    out: Path
    report: dict[str, Any]
    experiment: str = "role_wise"

    @property
    def table(self) -> str:
        return self.report.get("table", "")

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"


def run(config: ConfigLike = None, *, out: str | Path | None = None, resume: bool = False,
        data_dir: str | None = None, address: str | None = None, overrides: Sequence[str] = (),
        imports: Sequence[str] = (), progress: ProgressFactory | None = None, say: Say = _silent) -> RunResult:
    """``rolekd run``: stage α, stage β, the baselines on the same data and seeds, and the report
    (without ``config``: the embedded demo). ``address`` (default ``search.address``): a Ray cluster for the
    searches and the trainings, which then run as many at once as fit (see :mod:`rolekd.pipeline.parallel`)."""
    cfg = resolve_config(config, overrides, imports, default="demo")
    folder = out_folder(cfg, out, "")  # default runs/<config name>
    if cfg.pipeline.experiment == "shift_equivariance":
        from .setup import prepare
        from .shift_toy import run_shift_toy

        return RunResult(folder, run_shift_toy(cfg, prepare(cfg, data_dir), folder, resume=resume,
                                               callback_factory=progress), cfg.pipeline.experiment)
    from .run import run_pipeline

    say(f"rolekd run {cfg.name}: {cfg.data.dataset}, teacher {cfg.teacher.model}, student "
        f"{cfg.student.model} W/A {cfg.student.w_bits}/{cfg.student.a_bits}, KD {cfg.distill.method} -> {folder}")
    report = run_pipeline(cfg, folder, resume=resume, data_dir=data_dir, progress=progress, say=say, address=address)
    return RunResult(folder, report)


# ---- reading a config ------------------------------------------------------------------------------


@dataclass
class ConfigDescription:
    """A config's every key: dotted name, value, default and description (``rolekd config``)."""

    source: str
    fields: list[FieldDoc]

    def text(self) -> str:
        """One line per section and per key, so ``rolekd config demo | grep quantile`` answers a question."""
        lines = [f"# {self.source}: every key, its value, (its default) and what it means"]
        for f in self.fields:
            if f.section:
                lines.append(f"\n{f.path}: {f.description}")
            else:
                lines.append(f"  {f.path} = {_shown(f.value)}  (default {_shown(f.default)})  {f.description}")
        return "\n".join(lines)


def _shown(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def describe_config(config: ConfigLike = None, *, overrides: Sequence[str] = (),
                    imports: Sequence[str] = ()) -> ConfigDescription:
    """``rolekd config``: a config (a packaged name, a YAML path; default: the defaults) with every field's value,
    default and description, so nobody needs to read config.py to know what a key means."""
    from ..config import field_docs

    cfg = resolve_config({} if config is None else config, overrides, imports)
    source = "the defaults" if config is None else str(config) if isinstance(config, (str, Path)) else "the config given"
    return ConfigDescription(source + (f" with {', '.join(overrides)}" if overrides else ""), field_docs(cfg))


# ---- using trained networks ------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Top-1 accuracy and loss of a network on a test split, with its bits and sizes."""

    path: Path
    dataset: str
    images: int
    accuracy: float
    loss: float
    meta: dict[str, Any]
    sizes: dict[str, Any]
    note: str | None = None  # which file of a folder was used

    def line(self) -> str:
        m, s = self.meta, self.sizes
        return (f"{m['model']} W/A {m.get('w_bits', 32)}/{m.get('a_bits', 32)} on {self.dataset} test ({self.images} "
                f"images): top-1 {100 * self.accuracy:.2f}%  loss {self.loss:.4f}  size {s['fp32_bytes'] / 1e6:.2f} MB "
                f"fp32 -> {s['packed_bytes'] / 1e6:.2f} MB deployed")


def evaluate(checkpoint: str | Path, config: ConfigLike = None, *, data_dir: str | None = None,
             overrides: Sequence[str] = (), imports: Sequence[str] = ()) -> EvalResult:
    """``rolekd eval``: a training checkpoint, a training folder (its last.pt) or a packed export, on the
    test split of the config's dataset (default: the demo's)."""
    from ..quant import load_network, model_size_report
    from ..training import checkpoint_in, evaluate_model
    from .setup import prepare

    cfg = resolve_config(config, overrides, imports, default="demo")
    path, note = checkpoint_in(checkpoint)
    loaded = load_network(path)
    prep = prepare(cfg, data_dir)
    if loaded.meta["num_classes"] != prep.full.num_classes:
        raise ValueError(f"{path} predicts {loaded.meta['num_classes']} classes; dataset {prep.full.name!r} has "
                         f"{prep.full.num_classes}")
    model = loaded.model.to(prep.device)
    res = evaluate_model(model, prep.full.test, prep.normalizer, cfg.data.eval_batch_size)
    return EvalResult(path, prep.full.name, len(prep.full.test), res["acc"], res["loss"], loaded.meta,
                      model_size_report(model), note)


def export(checkpoint: str | Path, output: str | Path):
    """``rolekd export``: a training checkpoint's (quantised) network with packed integer weights; returns the
    :class:`~rolekd.quant.ExportReport` (fp32 vs packed bytes)."""
    from ..quant import export_packed, load_network

    loaded = load_network(checkpoint)
    if loaded.packed:
        raise ValueError(f"{checkpoint}: a packed export already; copy that file instead of exporting it again")
    return export_packed(loaded.model, output, loaded.meta)


def plot(schedules: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """``rolekd plot``: one or two schedules as the paper's Fig. 3 (default file: beside the first)."""
    from ..augment.plot import plot_command

    return Path(plot_command([str(s) for s in schedules], None if output is None else str(output)))


def preview(config: ConfigLike = None, *, output: str | Path = "augment_preview.png", policy: str | None = None,
            op: str | None = None, mag: int = 5, agent: str | None = None, teacher: str | Path | None = None,
            student: str | Path | None = None, n: int = 16, seed: int = 0, data_dir: str | None = None,
            overrides: Sequence[str] = (), imports: Sequence[str] = ()) -> Path:
    """``rolekd augment-preview``: a PNG of test images before and after a policy, one op, or an agent."""
    from ..augment.plot import preview_command
    from .setup import prepare

    cfg = resolve_config(config, overrides, imports, default="demo")
    if agent and not (teacher and student):
        raise ValueError(f"--agent {agent} needs --teacher and --student checkpoints: the pair it generates for")
    if agent and (policy or op):
        raise ValueError("--agent shows an agent's samples; expected it without --policy or --op")
    prep = prepare(cfg, data_dir)
    if agent:
        from .agent_preview import agent_preview_command

        return Path(agent_preview_command(cfg, prep, agent, teacher, student, n, output, seed))
    images = prep.full.test.images[:n].cpu()
    return Path(preview_command(policy, op, mag, images, str(output), seed))
