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
from .schedule_plan import plan_schedules, slug
from .stats import spread

if TYPE_CHECKING:
    from .run import Row
    from .schedule_plan import PlannedSchedule

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
    cut = augmentation_cutout(cfg, row.schedule is not None) if row.cutout is None else row.cutout
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


def _plot_schedules(schedules: dict[str, Any], plots: Path, plans: dict[str, "PlannedSchedule"]) -> list[str]:
    """Every schedule the run trained with, alone, and A_T beside the student's in one figure."""
    if not schedules:
        return []
    from ..augment.plot import plot_schedules

    names = {ref: f"{ref}: {plans[ref].stage}" if ref in plans else ref for ref in schedules}
    written = []
    if len(schedules) > 1:
        plot_schedules({names[k]: v for k, v in schedules.items()}, plots / "schedules.png")
        written.append("plots/schedules.png")
    for key, sched in schedules.items():
        fname = {"A_T": "schedule_teacher.png", "A_S": "schedule_student.png"}.get(key, f"schedule_{slug(key)}.png")
        plot_schedules({names[key]: sched}, plots / fname)
        written.append(f"plots/{fname}")
    return written


def comparison_pairs(rows: list["Row"]) -> list[tuple[str, str, str, str]]:
    """(row, reference, what "better" means, what "worse" means), paired over seeds (same teacher, same seed):
    every KD student row with a schedule against the KD baseline and against A_T with the same cutout, A_T for
    the student against the KD baseline, and the teacher's A_T against its baseline."""
    keys = {r.key for r in rows}
    pairs = []
    for r in rows:
        if r.role != "student" or not r.kd or not r.schedule or r.agents:
            continue
        name = r.schedule if r.cutout is None else f"{r.schedule}, cutout {r.cutout}"
        pairs.append((r.key, "student_kd", f"{name} better than the KD baseline", f"{name} worse than the KD baseline"))
        a_t = "student_kd_teacher_schedule" + (f"_cutout{r.cutout}" if r.cutout is not None else "")
        if r.schedule != "A_T" and a_t in keys:
            pairs.append((r.key, a_t, f"{name} better than A_T", f"{name} worse than A_T"))
    pairs.append(("teacher_alpha", "teacher_vanilla", "A_T better for the teacher", "A_T worse for the teacher"))
    return [p for p in pairs if p[0] in keys and p[1] in keys]


def comparisons(results: list[dict[str, Any]], rows: list["Row"]) -> list[dict[str, Any]]:
    """Paired last-epoch differences (row - reference) over seeds, for the pairs both present."""
    from .stats import paired_difference

    by_key = {r["key"]: r for r in results}
    out = []
    for key, ref, better, worse in comparison_pairs(rows):
        if key in by_key and ref in by_key:
            diff = paired_difference(by_key[key]["last_per_seed"], by_key[ref]["last_per_seed"], better, worse)
            out.append({"row": key, "reference": ref, "label": by_key[key]["label"],
                        "reference_label": by_key[ref]["label"], **diff})
    return out


def between_searches(results: list[dict[str, Any]], rows: list["Row"], plans: dict[str, "PlannedSchedule"],
                     default_cutout: int = 0) -> list[dict[str, Any]]:
    """With several independent stage-β searches: per cutout, each search's A_S row over seeds, the spread between
    searches next to the spread between retrain seeds, and the effect of *a* search (the search as the unit: each
    search's mean paired difference, a t-interval over searches) against the KD baseline and against A_T. The
    reference's seed mean is common to every search's difference, so its own seed noise is not in that interval
    (the per-seed comparisons carry it). ``default_cutout``: the side of rows without their own
    (``data.schedule_cutout``), reported as the number it is."""
    import math
    import statistics

    from .stats import paired_difference

    by_key = {r["key"]: r for r in results}
    groups: dict[int | None, list[tuple["Row", dict[str, Any]]]] = {}
    for row in rows:
        plan = plans.get(row.schedule or "")
        if plan is None or plan.role != "student" or row.agents or not row.kd or row.key not in by_key:
            continue
        groups.setdefault(row.cutout, []).append((row, by_key[row.key]))
    out = []
    for cutout, members in groups.items():
        if len(members) < 2:
            continue
        means = [r["last"]["mean"] for _, r in members]
        seed_vars = [r["last"]["std"] ** 2 for _, r in members]
        entry: dict[str, Any] = {
            "cutout": default_cutout if cutout is None else cutout, "searches": [row.schedule for row, _ in members],
            "rows": [row.key for row, _ in members], "means": means,
            "between_searches_std": statistics.stdev(means),
            "between_seeds_std": math.sqrt(statistics.fmean(seed_vars)), "mean": statistics.fmean(means),
            "versus": [],
        }
        name = f"A_S, cutout {entry['cutout']}"
        suffix = f"_cutout{cutout}" if cutout is not None else ""
        for ref, label in (("student_kd", "the KD baseline"), ("student_kd_teacher_schedule" + suffix, "A_T")):
            if ref in by_key:
                base = [statistics.fmean(by_key[ref]["last_per_seed"])] * len(means)
                diff = paired_difference(means, base, f"a search's {name} better than {label}",
                                         f"a search's {name} worse than {label}")
                entry["versus"].append({"reference": ref, "reference_label": by_key[ref]["label"], **diff})
        out.append(entry)
    return out


def _between_searches_section(spreads: list[dict[str, Any]]) -> list[str]:
    if not spreads:
        return []
    md = ["## Independent searches: is A_S the search's quality or its luck?", "",
          "Stage β was searched several times with different search seeds (`pipeline.search_seeds`), each A_S retrained "
          "over the run's seeds. *Between searches*: the standard deviation of the searches' mean accuracies; "
          "*between seeds*: the pooled standard deviation of one A_S over retrain seeds. When the first is not larger "
          "than the second, the searches found schedules no more different than retraining one twice.", "",
          "| A_S rows | cutout | mean over searches (%) | per search (%) | between searches (points) | between seeds "
          "(points) |", "|---|---:|---:|---|---:|---:|"]
    for e in spreads:
        per = ", ".join(f"{100 * m:.2f}" for m in e["means"])
        md.append(f"| {', '.join(e['searches'])} | {e['cutout']} | {100 * e['mean']:.2f} | {per} "
                  f"| {100 * e['between_searches_std']:.2f} | {100 * e['between_seeds_std']:.2f} |")
    md += ["", "The effect of running the search, with the search as the unit: each search's mean difference to the "
           "reference over the retrain seeds, and the 95 % t-interval over searches (it carries the searches' luck, "
           "which a per-seed interval of one A_S does not; the reference's own seed noise, common to every search, "
           "is in the per-seed table above).", "",
           "| A_S rows | reference | mean Δ (points) | 95 % interval over searches | per search | verdict |",
           "|---|---|---:|---|---|---|"]
    for e in spreads:
        for d in e["versus"]:
            interval = _interval(d)
            per = ", ".join(_pct(x) for x in d["deltas"])
            md.append(f"| {', '.join(e['searches'])} | {d['reference_label']} | {_pct(d['mean'])} | {interval} "
                      f"| {per} | {d['verdict']} |")
    return md + [""]


def _interval(d: dict[str, Any]) -> str:
    """A paired difference's 95 % interval in points, or a dash where one seed gave none."""
    return "–" if d["low"] is None else f"[{_pct(d['low'])}, {_pct(d['high'])}]"


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
        interval = _interval(d)
        seeds = ", ".join(_pct(x) for x in d["deltas"])
        md.append(f"| {d['label']} | {d['reference_label']} | {_pct(d['mean'])} | {interval} | {seeds} | {d['verdict']} |")
    return md + [""]


def _search_rows(out: Path, schedules: dict[str, Any], plans: dict[str, "PlannedSchedule"]) -> list[dict[str, Any]]:
    """What each search found: read from its summary, so a reused schedule (no search) says so."""
    rows = []
    for key, sched in schedules.items():
        plan = plans.get(key)
        if plan is None or not plan.searched:
            continue
        summary_path = out / plan.folder / "search" / "search_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        active = sum(1 for p in sched.policies if p.prob_sum > 0)
        population = None
        if summary is not None and summary.get("final_val_acc"):
            population = spread(list(summary["final_val_acc"].values()))
        rows.append({"schedule": key, "search": plan.stage, "summary": summary, "epochs_with_augmentation": active,
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
                 schedules: dict[str, Any], sources: dict[str, str] | None = None,
                 plans: dict[str, "PlannedSchedule"] | None = None) -> dict[str, Any]:
    from .run import skipped_rows

    sources = sources or {}
    plans = plans if plans is not None else {p.ref: p for p in plan_schedules(cfg)}
    results = []
    for row in rows:
        r = collect_row(out, row, cfg.pipeline.seeds)
        if r is not None:
            results.append({**r, "augmentation": augmentation(cfg, row)})
    skipped = skipped_rows(cfg)
    diffs = comparisons(results, rows)
    distill = _distill_line(cfg)
    plots = out / "plots"
    images = _plot_schedules(schedules, plots, plans)
    _plot_curves(results, plots / "curves.png")
    images.append("plots/curves.png")
    searches = _search_rows(out, schedules, plans)
    spreads = between_searches(results, rows, plans, cfg.data.resolved_schedule_cutout)
    report = {
        "name": cfg.name, "dataset": cfg.data.dataset, "seeds": cfg.pipeline.seeds,
        "teacher": {"model": cfg.teacher.model, "epochs": cfg.teacher.train.epochs},
        "student": {"model": cfg.student.model, "w_bits": cfg.student.w_bits, "a_bits": cfg.student.a_bits,
                    "epochs": cfg.student.train.epochs},
        "distill": cfg.distill.method, "distill_settings": distill,
        "rows": [{k: v for k, v in r.items() if k != "curves"} for r in results],
        "skipped_rows": skipped, "schedule_sources": sources, "comparisons": diffs,
        "wall_time_s": times, "plots": images, "searches": searches, "between_searches": spreads,
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
        *_between_searches_section(spreads),
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
