"""The `rolekd` command line. Parsing, progress and exit codes only; the work is in `pipeline`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

EPILOG = """examples:
  rolekd run                                   the embedded demo, end to end (offline, ~5 min on 2 cores)
  rolekd train demo --set teacher.train.epochs=3
  rolekd train configs/paper/table2_cifar10_resnet18.yaml --data-dir ~/data
  rolekd eval runs/demo/teacher/best.pt --config demo
set ROLEKD_DEBUG=1 to see full tracebacks."""


def _common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="YAML config file or packaged config name (e.g. demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set teacher.train.epochs=10 (repeatable)")
    p.add_argument("--data-dir", help="where datasets live (default $ROLEKD_DATA or ~/.cache/rolekd)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a Python module (file path or dotted name) that registers your models")


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default runs/<config name>/<role>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolekd",
        description="Knowledge distillation with role-wise data augmentation: a teacher and a (low-bit) "
        "student each get the augmentation schedule that helps them, searched with population based augmentation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the whole method: stage α, stage β, baselines, report",
                       description="Search the teacher's schedule and retrain it (stage α), search the student's "
                       "schedule under KD and retrain it (stage β), train the baselines on the same data and seeds, "
                       "and write report.md / report.json / plots. Without CONFIG: the embedded demo.")
    p.add_argument("config", nargs="?", default=None, help="YAML config or packaged config name (default: demo)")
    _common(p, config_required=False)
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="skip finished stages and continue the one in flight")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("search", help="population based augmentation search for one role",
                       description="PBA on Ray Tune: search an augmentation schedule for the teacher (stage α) or "
                       "for the student trained with KD from a fixed teacher (stage β). Writes schedule.json.")
    _common(p)
    p.add_argument("--role", choices=["teacher", "student"], required=True)
    p.add_argument("--teacher", help="teacher checkpoint (required for --role student)")
    p.add_argument("--out", help="output folder (default runs/<config name>/search_<role>)")
    p.add_argument("--address", help="join this Ray cluster (default: a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="train one network (the teacher by default) with labels only",
                       description="Train the configured teacher (or, with --role student, the student without KD).")
    _common(p)
    _out(p)
    p.add_argument("--role", choices=["teacher", "student"], default="teacher")
    p.add_argument("--schedule", help="augmentation schedule JSON to train with, or a packaged schedule's name "
                   "(pba-rcifar10, role-kd-cifar100-resnet18-w2a2; default: baseline only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train the student with KD from a fixed teacher",
                       description="Distil the configured student from a trained teacher with the configured KD objective.")
    _common(p)
    _out(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (e.g. runs/x/teacher/best.pt)")
    p.add_argument("--schedule", help="augmentation schedule JSON for the student, or a packaged schedule's name "
                   "(pba-rcifar10, role-kd-cifar100-resnet18-w2a2)")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="evaluate a checkpoint or packed export on the test split",
                       description="Print top-1 accuracy, loss, bits and model size of a training checkpoint or of "
                       "a packed file written by `rolekd export`.")
    p.add_argument("checkpoint")
    p.add_argument("--config", default=None, help="config naming the dataset (default: the demo)")
    _common(p, config_required=False)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a quantised student with packed integer weights",
                       description="Pack a (quantised) checkpoint's weights as integer codes + scale.")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="draw schedules as the paper's Fig. 3",
                       description="Normalised probability and magnitude of each op over epochs; two files side by side.")
    p.add_argument("schedules", nargs="+", help="one or two schedule JSON files")
    p.add_argument("-o", "--output", help="PNG to write (default: beside the first schedule)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("augment-preview", help="PNG grid of images before/after a policy, an op or an agent",
                       description="Show what a policy, a schedule epoch, a single op, or an adversarial agent "
                                   "(with --teacher and --student checkpoints) does to real images.")
    p.add_argument("--config", default=None, help="config naming the dataset (default: the demo)")
    p.add_argument("--policy", help="schedule or policy JSON (default: a random policy)")
    p.add_argument("--op", help="show this single op at probability 10")
    p.add_argument("--mag", type=int, default=5, help="magnitude 0..9 for --op (the levels a schedule uses)")
    p.add_argument("--agent", choices=["backward", "hard"], help="show this agent's samples (needs --teacher, --student)")
    p.add_argument("--teacher", help="teacher checkpoint, for --agent")
    p.add_argument("--student", help="student checkpoint (last.pt restores HARD's augmentor), for --agent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=16, help="number of images")
    p.add_argument("-o", "--output", default="augment_preview.png")
    _common(p, config_required=False)
    p.set_defaults(func=cmd_preview)

    return parser


# ---- helpers -----------------------------------------------------------------------------------------


def _load_cfg(args: argparse.Namespace, default: str | None = None):
    from ..config import load_config
    from ..plugins import import_user_modules

    import_user_modules(getattr(args, "imports", []))
    return load_config(getattr(args, "config", None) or default, args.overrides)


def _prepare(cfg, args):
    from ..pipeline.setup import prepare

    return prepare(cfg, args.data_dir)


def _default_out(cfg, role: str, args) -> Path:
    """The output folder, refused before any data is loaded when a file is in its way."""
    from ..atomic import check_folder_path

    return check_folder_path(Path(args.out) if args.out else Path("runs") / cfg.name / role, "--out")


def _claim(cfg, out: Path, args, progress: str = "last.pt") -> None:
    from ..pipeline.folders import claim_folder

    claim_folder(cfg, out, args.resume, progress)


def _load_schedule(path: str | None):
    """``--schedule``: a schedule JSON or a packaged schedule's name (``pba-rcifar10``)."""
    if not path:
        return None
    from ..augment.schedule import Schedule

    return Schedule.load(path)


def _report_fit(label: str, result, out: Path) -> None:
    from .progress import console

    last = result.last
    acc = last.get("val_acc", float("nan"))
    console.print(
        f"[bold green]{label} done[/]: last-epoch accuracy {100 * acc:.2f}%, best {100 * result.best_acc:.2f}% "
        f"(epoch {result.best_epoch}) — checkpoints and metrics in {out}"
    )


# ---- commands ----------------------------------------------------------------------------------------


def _progress_factory(label: str, epochs: int):
    from .progress import TrainingProgress

    return TrainingProgress(label, epochs)


def cmd_run(args: argparse.Namespace) -> int:
    from ..atomic import check_folder_path
    from .progress import console

    cfg = _load_cfg(args, default="demo")
    out = check_folder_path(Path(args.out) if args.out else Path("runs") / cfg.name, "--out")
    say = console.print
    if cfg.pipeline.experiment == "shift_equivariance":
        from ..pipeline.setup import prepare
        from ..pipeline.shift_toy import run_shift_toy

        result = run_shift_toy(cfg, prepare(cfg, args.data_dir), out, resume=args.resume,
                               callback_factory=_progress_factory)
        console.print((out / "report.md").read_text() if (out / "report.md").is_file() else result)
        return 0
    from ..pipeline.run import run_pipeline

    say(f"[bold]rolekd run[/] {cfg.name}: {cfg.data.dataset}, teacher {cfg.teacher.model}, student {cfg.student.model} "
        f"W/A {cfg.student.w_bits}/{cfg.student.a_bits}, KD {cfg.distill.method} -> {out}")
    report = run_pipeline(cfg, out, resume=args.resume, data_dir=args.data_dir, progress=_progress_factory, say=say)
    console.print()
    console.print(report["table"])
    console.print(f"\nreport: {out / 'report.md'}  plots: {out / 'plots'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..pipeline.search_stage import search_command
    from ..search.run import EXPERIMENT, TUNER_STATE
    from .progress import console

    cfg = _load_cfg(args)
    out = _default_out(cfg, f"search_{args.role}", args)
    if args.role == "student" and not args.teacher:
        raise ValueError("--role student needs --teacher CHECKPOINT (the fixed, trained teacher)")
    _claim(cfg, out, args, progress=f"{EXPERIMENT}/{TUNER_STATE}")
    result = search_command(cfg, args.role, args.teacher, out, address=args.address or cfg.search.address,
                            resume=args.resume, data_dir=args.data_dir)
    console.print(f"best trial {result.best_trial}: validation accuracy {100 * result.best_acc:.2f}%; "
                  f"schedule written to {result.schedule_path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..pipeline.stages import role_config, train_network
    from .progress import TrainingProgress, console

    cfg = _load_cfg(args)
    out = _default_out(cfg, args.role, args)
    prep = _prepare(cfg, args)
    net = role_config(cfg, args.role)
    _claim(cfg, out, args)
    console.print(f"training the {args.role} [bold]{net.model}[/] on {prep.full.name} "
                  f"({len(prep.full.train)} train / {len(prep.full.test)} test images, {prep.device})")
    with TrainingProgress(args.role, net.train.epochs) as cb:
        result = train_network(cfg, prep, args.role, out, schedule=_load_schedule(args.schedule),
                               agents=cfg.student.agents if args.role == "student" else (),
                               resume=args.resume, callback=cb)
    _report_fit(args.role, result, out)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..pipeline.stages import load_teacher, train_network
    from .progress import TrainingProgress, console

    cfg = _load_cfg(args)
    out = _default_out(cfg, "student", args)
    prep = _prepare(cfg, args)
    teacher = load_teacher(args.teacher, cfg, prep)
    _claim(cfg, out, args)
    s = cfg.student
    console.print(f"distilling {teacher.meta['model']} -> {s.model} (W/A {s.w_bits}/{s.a_bits}) "
                  f"with {cfg.distill.method} on {prep.full.name} ({prep.device})")
    with TrainingProgress("student", s.train.epochs) as cb:
        result = train_network(cfg, prep, "student", out, schedule=_load_schedule(args.schedule), teacher=teacher,
                               agents=cfg.student.agents, resume=args.resume, callback=cb)
    _report_fit("student", result, out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..pipeline.networks import load_trained_network
    from ..train import checkpoint_in, evaluate_model
    from .progress import console

    cfg = _load_cfg(args, default="demo")
    path, note = checkpoint_in(args.checkpoint)
    if note:
        console.print(note)
    model, meta = load_trained_network(path)
    prep = _prepare(cfg, args)
    if meta["num_classes"] != prep.full.num_classes:
        raise ValueError(f"{path} predicts {meta['num_classes']} classes; dataset {prep.full.name!r} has {prep.full.num_classes}")
    model = model.to(prep.device)
    res = evaluate_model(model, prep.full.test, prep.normalizer, cfg.data.eval_batch_size)
    size = ""
    try:
        from ..quant import model_size_report

        rep = model_size_report(model)
        size = f"  size {rep.get('fp32_bytes', 0) / 1e6:.2f} MB fp32 -> {rep.get('packed_bytes', 0) / 1e6:.2f} MB deployed"
    except ImportError:
        pass
    console.print(f"{meta['model']} W/A {meta.get('w_bits', 32)}/{meta.get('a_bits', 32)} on {prep.full.name} test "
                  f"({len(prep.full.test)} images): top-1 {100 * res['acc']:.2f}%  loss {res['loss']:.4f}{size}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..quant import export_command
    from .progress import console

    console.print(export_command(args.checkpoint, args.output))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ..augment.plot import plot_command
    from .progress import console

    if len(args.schedules) > 2:
        raise ValueError(f"plot takes one or two schedules (teacher, student), got {len(args.schedules)}")
    console.print(f"wrote {plot_command(args.schedules, args.output)}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..augment.plot import preview_command
    from .progress import console

    cfg = _load_cfg(args, default="demo")
    if args.agent and not (args.teacher and args.student):
        raise ValueError(f"--agent {args.agent} needs --teacher and --student checkpoints: the pair it generates for")
    if args.agent and (args.policy or args.op):
        raise ValueError("--agent shows an agent's samples; expected it without --policy or --op")
    prep = _prepare(cfg, args)
    if args.agent:
        from ..pipeline.agent_preview import agent_preview_command

        out = agent_preview_command(cfg, prep, args.agent, args.teacher, args.student, args.n, args.output, args.seed)
        console.print(f"wrote {out}")
        return 0
    images = prep.full.test.images[: args.n].cpu()
    console.print(f"wrote {preview_command(args.policy, args.op, args.mag, images, args.output, args.seed)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("rolekd: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ArithmeticError) as exc:  # user-facing errors: one line
        if os.environ.get("ROLEKD_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"rolekd: error: {msg}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
