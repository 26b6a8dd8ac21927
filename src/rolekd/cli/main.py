"""The `rolekd` command line. Parsing, progress and exit codes only; the work is in `pipeline`."""

from __future__ import annotations

import argparse
import os
import sys
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
    _config_options(p)
    p.add_argument("--data-dir", help="where datasets live (default $ROLEKD_DATA or ~/.cache/rolekd)")


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set teacher.train.epochs=10 (repeatable)")
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
    p.add_argument("--address", help="run the searches and the trainings on this Ray cluster (default: this machine)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("search", help="population based augmentation search for one role",
                       description="PBA on Ray: search an augmentation schedule for the teacher (stage α) or "
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
    p.add_argument("--agent", help="show this agent's samples: backward, hard or a registered one (needs --teacher, "
                   "--student)")
    p.add_argument("--teacher", help="teacher checkpoint, for --agent")
    p.add_argument("--student", help="student checkpoint (last.pt restores HARD's augmentor), for --agent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=16, help="number of images")
    p.add_argument("-o", "--output", default="augment_preview.png")
    _common(p, config_required=False)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("config", help="print a config: every key's value, default and meaning",
                       description="Print every key of a config (dotted name), its value, its default and what it "
                       "means. Without CONFIG: the defaults.")
    p.add_argument("config", nargs="?", default=None, help="YAML config or packaged config name (default: the defaults)")
    _config_options(p)
    p.set_defaults(func=cmd_config)

    return parser


# ---- commands: each calls its function in rolekd.pipeline.commands and prints what it returns ----------


def _config_args(args: argparse.Namespace) -> dict:
    return {"overrides": args.overrides, "imports": getattr(args, "imports", [])}


def _progress_factory(label: str, epochs: int):
    from .progress import TrainingProgress

    return TrainingProgress(label, epochs)


def _say(text: str) -> None:
    from .progress import console

    console.print(text)


def _report_fit(result) -> None:
    _say(f"[bold green]{result.role} done[/]: last-epoch accuracy {100 * result.accuracy:.2f}%, best "
         f"{100 * result.best_accuracy:.2f}% (epoch {result.best_epoch}) — checkpoints and metrics in {result.out}")


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    result = commands.run(args.config, out=args.out, resume=args.resume, data_dir=args.data_dir,
                          address=args.address, progress=_progress_factory, say=_say, **_config_args(args))
    if result.experiment == "shift_equivariance":  # the toy's report.md is its whole result
        _say(result.report_path.read_text() if result.report_path.is_file() else str(result.report))
        return 0
    _say("")
    _say(result.table)
    _say(f"\nreport: {result.report_path}  plots: {result.out / 'plots'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    result = commands.search(args.config, args.role, teacher=args.teacher, out=args.out, address=args.address,
                             resume=args.resume, data_dir=args.data_dir, progress=True, **_config_args(args))
    _say(f"best trial {result.best_trial}: validation accuracy {100 * result.best_acc:.2f}%; "
         f"schedule written to {result.schedule_path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    _report_fit(commands.train(args.config, role=args.role, out=args.out, schedule=args.schedule, resume=args.resume,
                               data_dir=args.data_dir, progress=_progress_factory, say=_say, **_config_args(args)))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    _report_fit(commands.distill(args.config, args.teacher, out=args.out, schedule=args.schedule,
                                 resume=args.resume, data_dir=args.data_dir, progress=_progress_factory, say=_say,
                                 **_config_args(args)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    result = commands.evaluate(args.checkpoint, args.config, data_dir=args.data_dir, **_config_args(args))
    if result.note:
        _say(result.note)
    _say(result.line())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    _say(commands.export(args.checkpoint, args.output).table())
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    _say(f"wrote {commands.plot(args.schedules, args.output)}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    out = commands.preview(args.config, output=args.output, policy=args.policy, op=args.op, mag=args.mag,
                           agent=args.agent, teacher=args.teacher, student=args.student, n=args.n, seed=args.seed,
                           data_dir=args.data_dir, **_config_args(args))
    _say(f"wrote {out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..pipeline import commands

    print(commands.describe_config(args.config, **_config_args(args)).text())  # the listing is stdout: pipe it
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
    except Exception as exc:  # a full disk, wherever it struck (torch.save says so in a RuntimeError): one line
        from ..atomic import is_disk_full

        if os.environ.get("ROLEKD_DEBUG") or not is_disk_full(exc):
            raise
        again = "rerun with --resume to continue" if hasattr(args, "resume") else "rerun"
        print(f"rolekd: error: {_disk_full_line(exc)}; free space there and {again}", file=sys.stderr)
        return 2


def _disk_full_line(exc: BaseException) -> str:
    """The :class:`~rolekd.atomic.DiskFullError`'s line, or the file an ENOSPC from elsewhere named."""
    from ..atomic import DiskFullError

    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, DiskFullError):
        return str(exc)
    where = f" to write {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
    return f"no space left on device{where}"

if __name__ == "__main__":
    sys.exit(main())
