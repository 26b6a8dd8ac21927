"""The run's report: a results table shaped like the paper's Table 2, built only from the rows'
metric files, the same numbers in ``report.json``, schedule plots (Fig. 3) and learning curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import read_jsonl
from ..config import DataConfig, ExperimentConfig
from ..training import atomic_write_json, atomic_write_text
from .folders import seed_folder
from .stats import spread

if TYPE_CHECKING:
    from .run import Row

DEMO_NOTE = (
    "> **Demo budget.** This run used the embedded digits data set, a small ResNet, a population of "
    "{population} and {search_epochs} search epochs: it shows the pipeline end to end in minutes, "
    "not the method's accuracy. See `configs/paper/` and `configs/cpu/` for real settings.\n"
)


def _search_epochs(cfg: ExperimentConfig) -> str:
    """``40``, or ``80 (teacher) / 40 (student)`` when the searches' lengths follow the roles'."""
    t, s = cfg.search_epochs("teacher"), cfg.search_epochs("student")
    return str(t) if t == s else f"{t} (teacher) / {s} (student)"


def _fmt(s: dict[str, float]) -> str:
    if s["n"] > 1:
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    return f"{100 * s['mean']:.2f}"


def collect_row(out: Path, row: "Row", seeds: list[int]) -> dict[str, Any] | None:
    """Last-epoch and best-epoch test accuracy of a row over seeds, read from its metrics files."""
    last, best, curves = [], [], {}
    for seed in seeds:
        path = seed_folder(out / row.folder, seed) / "metrics.jsonl"
        if not path.is_file():
            return None
        rows = read_jsonl(path)  # a torn last line (a killed training) is skipped
        evaluated = [r for r in rows if "val_acc" in r]  # every train.eval_every epochs and the last
        accs = [r["val_acc"] for r in evaluated]
        last.append(accs[-1])
        best.append(max(accs))
        curves[seed] = ([r["epoch"] for r in evaluated], accs)
    return {"key": row.key, "label": row.label, "role": row.role, "last": spread(last), "best": spread(best),
            "last_per_seed": last, "best_per_seed": best, "curves": curves}


def augmentation(cfg: ExperimentConfig, row: "Row") -> str:
    """What a row trained with, in words: its schedule, agents, crop/flip and cutout."""
    from ..agents import agent_label
    from .stages import augmentation_cutout

    parts = [row.schedule] if row.schedule else []
    parts += [agent_label(a) for a in row.agents]
    d = cfg.data
    base = [f"crop {d.crop_padding}" if d.crop_padding else "", "flip" if d.flip else ""]
    parts += [b for b in base if b]
    cut = augmentation_cutout(cfg, row.schedule is not None)
    if cut:
        parts.append(f"cutout {cut}")
    return " + ".join(parts) or "none"



def _bits(cfg: ExperimentConfig, role: str) -> str:
    if role == "teacher":
        return f"{cfg.teacher.model} 32/32"
    s = cfg.student
    return f"{s.model} {s.w_bits}/{s.a_bits}"


def _table(results: list[dict[str, Any]], cfg: ExperimentConfig) -> str:
    seeds = len(cfg.pipeline.seeds)
    over = f", mean ± std over {seeds} seeds" if seeds > 1 else ""
    lines = [
        f"| method | network W/A | augmentation | last-epoch acc. (%){over} | best-epoch acc. (%){over} |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['label']} | {_bits(cfg, r['role'])} | {r['augmentation']} | {_fmt(r['last'])} "
                     f"| {_fmt(r['best'])} |")
    return "\n".join(lines)


def _plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    for ax, role in zip(axes, ("teacher", "student")):
        for r in results:
            if r["role"] != role:
                continue
            for i, (seed, (epochs, accs)) in enumerate(sorted(r["curves"].items())):
                ax.plot(epochs, [100 * a for a in accs], label=r["label"] if i == 0 else None,
                        alpha=0.9 if i == 0 else 0.4)
        ax.set_title(f"{role}: test accuracy per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_schedules(schedules: dict[str, Any], plots: Path) -> list[str]:
    if not schedules:
        return []
    from ..augment.plot import plot_schedules

    names = {"A_T": "teacher schedule A_T (stage α)", "A_S": "student schedule A_S (stage β)"}
    written = []
    if len(schedules) == 2:
        plot_schedules({names[k]: schedules[k] for k in ("A_T", "A_S")}, plots / "schedules.png")
        written.append("plots/schedules.png")
    for key, sched in schedules.items():
        fname = "schedule_teacher.png" if key == "A_T" else "schedule_student.png"
        plot_schedules({names[key]: sched}, plots / fname)
        written.append(f"plots/{fname}")
    return written


# (row, reference row, what "better" means): paired over seeds, same teacher
COMPARISONS = [
    ("student_beta", "student_kd", "A_S better than the KD baseline", "A_S worse than the KD baseline"),
    ("student_beta", "student_kd_teacher_schedule", "A_S better than A_T", "A_S worse than A_T"),
    ("teacher_alpha", "teacher_vanilla", "A_T better for the teacher", "A_T worse for the teacher"),
]


def comparisons(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired last-epoch differences (row - reference) over seeds, for the pairs both present."""
    from .stats import paired_difference

    by_key = {r["key"]: r for r in results}
    out = []
    for key, ref, better, worse in COMPARISONS:
        if key in by_key and ref in by_key:
            diff = paired_difference(by_key[key]["last_per_seed"], by_key[ref]["last_per_seed"], better, worse)
            out.append({"row": key, "reference": ref, "label": by_key[key]["label"],
                        "reference_label": by_key[ref]["label"], **diff})
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.2f}"


def _comparison_section(diffs: list[dict[str, Any]]) -> list[str]:
    if not diffs:
        return []
    n = diffs[0]["n"]
    md = ["## Signal or noise: paired differences over seeds", "",
          f"Last-epoch accuracy of the row minus the reference's, seed by seed (same teacher, same seed), over {n} "
          f"seed{'s' if n != 1 else ''}; the interval is the mean's 95 % Student-t interval. A verdict needs the whole "
          "interval on one side of zero.", "",
          "| row | reference | mean Δ (points) | 95 % interval | per seed | verdict |", "|---|---|---:|---|---|---|"]
    for d in diffs:
        interval = "–" if d["low"] is None else f"[{_pct(d['low'])}, {_pct(d['high'])}]"
        seeds = ", ".join(_pct(x) for x in d["deltas"])
        md.append(f"| {d['label']} | {d['reference_label']} | {_pct(d['mean'])} | {interval} | {seeds} | {d['verdict']} |")
    return md + [""]


SEARCH_FOLDERS = {"A_T": ("stage α (teacher)", "stage_alpha"), "A_S": ("stage β (student, with KD)", "stage_beta")}


def _search_rows(out: Path, schedules: dict[str, Any]) -> list[dict[str, Any]]:
    """What each search found: read from its summary, so a reused schedule (no search) says so."""
    rows = []
    for key, sched in schedules.items():
        label, stage = SEARCH_FOLDERS[key]
        summary_path = out / stage / "search" / "search_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        active = sum(1 for p in sched.policies if p.prob_sum > 0)
        population = None
        if summary is not None and summary.get("final_val_acc"):
            population = spread(list(summary["final_val_acc"].values()))
        rows.append({"schedule": key, "search": label, "summary": summary, "epochs_with_augmentation": active,
                     "epochs": len(sched.policies), "population": population})
    return rows


def _search_section(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    md = ["## Searches", "",
          "The population's spread says whether the search had signal: when the best trial is within one standard "
          "deviation of the population's mean, which schedule won is close to chance.", "",
          "| schedule | search | best trial's validation acc. (%) | population's final acc. (%): mean ± std (min–max) "
          "| all trials (%) | exploits | epochs with augmentation |", "|---|---|---:|---|---|---:|---:|"]
    notes = []
    for r in rows:
        s = r["summary"]
        if s is None:
            md.append(f"| {r['schedule']} | {r['search']}: given, not searched | – | – | – | – "
                      f"| {r['epochs_with_augmentation']} / {r['epochs']} |")
        else:
            finals = ", ".join(f"{100 * v:.1f}" for v in sorted(s["final_val_acc"].values(), reverse=True))
            p = r["population"]
            pop = (f"{100 * p['mean']:.2f} ± {100 * p['std']:.2f} ({100 * p['min']:.1f}–{100 * p['max']:.1f})"
                   if p else "–")
            md.append(f"| {r['schedule']} | {r['search']} | {100 * s['best_val_acc']:.1f} | {pop} | {finals} "
                      f"| {s['exploits']} | {r['epochs_with_augmentation']} / {r['epochs']} |")
        for resumed in (s or {}).get("resumes", []):
            at = sorted(resumed.values())
            where = f"epoch {at[0]}" if at and at[0] == at[-1] else (f"epochs {at[0]}–{at[-1]}" if at else "the start")
            notes.append(f"- {r['search']}'s search was interrupted and resumed: its {len(at)} trials continued from "
                         f"their checkpoints at {where} of {s['epochs']}, not from scratch.")
        if r["epochs_with_augmentation"] == 0:
            notes.append(f"- {r['schedule']} is empty: the best trial kept PBA's initial all-zero policy, i.e. no explored "
                         "policy overtook training without learned augmentation within this search budget. Its rows "
                         "differ from the baseline-augmentation rows only by PBA's cutout (`data.schedule_cutout`).")
    return md + [""] + notes + ([""] if notes else [])


def _dataset_label(cfg: ExperimentConfig) -> str:
    from ..data import dataset_spec

    return dataset_spec(cfg.data.dataset).title


def split_line(d: DataConfig) -> str:
    """Which training images the rows and the searches use (``data.search_val``); the report's accuracies are
    on the test split, which neither touches."""
    if d.train_subset is not None:
        rows = f"a class-balanced {d.train_subset} of the training images (data.train_subset)"
    else:
        rows = "all training images" + (f" but the {d.reduced_val} held out" if d.search_val == "held_out" else "")
    ranked = (f"{d.reduced_val} held-out training images no row trains on" if d.search_val == "held_out" else
              f"{d.reduced_val} others (PBA's protocol: the rows train on these too)")
    return f"Every row trains on {rows}; the searches train on {d.reduced_train} of them and rank trials on {ranked}."


def _distill_line(cfg: ExperimentConfig) -> str:
    from ..kd import resolve_settings

    settings = resolve_settings(cfg.distill)
    if settings is None:
        return "none (labels only)"
    return f"{settings.describe()}; lambda x{settings.schedule.decay:g} every {settings.schedule.every:g} of the epochs"


def write_report(out: Path, cfg: ExperimentConfig, rows: list["Row"], times: dict[str, float],
                 schedules: dict[str, Any], sources: dict[str, str] | None = None) -> dict[str, Any]:
    from .run import skipped_rows

    sources = sources or {}
    results = []
    for row in rows:
        r = collect_row(out, row, cfg.pipeline.seeds)
        if r is not None:
            results.append({**r, "augmentation": augmentation(cfg, row)})
    skipped = skipped_rows(cfg)
    diffs = comparisons(results)
    distill = _distill_line(cfg)
    plots = out / "plots"
    images = _plot_schedules(schedules, plots)
    _plot_curves(results, plots / "curves.png")
    images.append("plots/curves.png")
    searches = _search_rows(out, schedules)
    report = {
        "name": cfg.name, "dataset": cfg.data.dataset, "seeds": cfg.pipeline.seeds,
        "teacher": {"model": cfg.teacher.model, "epochs": cfg.teacher.train.epochs},
        "student": {"model": cfg.student.model, "w_bits": cfg.student.w_bits, "a_bits": cfg.student.a_bits,
                    "epochs": cfg.student.train.epochs},
        "distill": cfg.distill.method, "distill_settings": distill,
        "rows": [{k: v for k, v in r.items() if k != "curves"} for r in results],
        "skipped_rows": skipped, "schedule_sources": sources, "comparisons": diffs,
        "wall_time_s": times, "plots": images, "searches": searches,
    }
    atomic_write_json(out / "report.json", report)
    md = [f"# rolekd report: {cfg.name}", ""]
    if cfg.name == "demo":
        md += [DEMO_NOTE.format(population=cfg.search.population, search_epochs=_search_epochs(cfg)), ""]
    md += [
        f"Data: {_dataset_label(cfg)}. Teacher: {cfg.teacher.model}, {cfg.teacher.train.epochs} epochs. "
        f"Student: {cfg.student.model} W/A {cfg.student.w_bits}/{cfg.student.a_bits}, {cfg.student.train.epochs} epochs, "
        f"KD: {cfg.distill.method}. Search: population {cfg.search.population}, {_search_epochs(cfg)} epochs. "
        f"{split_line(cfg.data)} Seeds: {cfg.pipeline.seeds}.",
        "",
        f"KD: {distill}.",
        "",
        *[f"Schedule {k}: {v}." for k, v in sorted(sources.items())],
        *([""] if sources else []),
        "Accuracy on the test split. *Last-epoch* is the number to compare; *best-epoch* picks the best "
        "epoch on the test split itself and is optimistic (the paper does not say which epoch it reports). "
        "*Augmentation*: what each row trained with, in PBA's order (schedule first, cutout last); rows with a "
        "searched schedule get PBA's cutout (`data.schedule_cutout`), the baselines crop + flip as in the paper.",
        "",
        _table(results, cfg),
        "",
        *[f"- Row `{k}` not trained: {why}." for k, why in skipped.items()],
        *([""] if skipped else []),
        *_comparison_section(diffs),
        *_search_section(searches),
        "## Wall time per stage",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in times.items()],
        "",
        "## Plots",
        "",
        *[f"![{Path(p).stem}]({p})" for p in images],
        "",
        "Schedules: normalised probability and magnitude of each operation over epochs (the paper's Fig. 3).",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(md))
    report["table"] = _table(results, cfg)
    return report
