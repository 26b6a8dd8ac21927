"""Issue 26, item 4: reading the second study's run folder for why the searched schedules did or did not beat the
KD baseline.

Prints markdown, reading only the run folder (``config.yaml``, the searches' summaries, the schedules, the rows'
``metrics.jsonl`` and, when the run finished, ``report.json``); on a partial run every section says in one line what
it could not find yet and shows the rest:

1. each search's signal: the spread of its population's final validation accuracies against the binomial standard
   error of one accuracy on the validation split (``data.reduced_val`` images), for stage α and every stage-β search;
2. do the searches agree: every schedule (A_T, each A_S[K], each published one) stretched to the student's epochs as
   its rows replay it, its mean Σp per epoch and its epochs with any augmentation, and the mean per-epoch L1
   distance between the probability vectors of every pair (entry by entry, as the first study measured A_T vs A_S);
3. fit: train and test accuracy at the last epoch of every row, mean over its finished seeds;
4. does a schedule beat the KD baseline: per schedule and cutout (``data.schedule_cutout`` and each of
   ``pipeline.extra_cutouts``) the mean paired difference to the KD baseline over seeds (``report.json``'s
   ``comparisons`` when present, else computed from the rows' metrics), and the report's spread between searches;
5. what each search saw of the policies it explored: at every exploit the target continues from its source's
   weights with the explored policy while the source keeps its own, so at the next ranking the target's validation
   accuracy minus the source's is that policy's effect over one interval against the source's (same weights, same
   validation images; the trials' own randomness is the rest). Read from ``history.jsonl`` and the trials'
   ``progress.jsonl``.

    python docs/results/study2_cifar10/analyse.py RUN_FOLDER
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from rolekd.atomic import read_jsonl
from rolekd.augment.policy import MAX_PROB, NUM_ENTRIES, Policy
from rolekd.augment.schedule import Schedule
from rolekd.config import ExperimentConfig, load_config
from rolekd.pba.lineage import read_history
from rolekd.pba.run import HISTORY, PROGRESS, TRIALS
from rolekd.pipeline.folders import CONFIG_FILE, seed_folder
from rolekd.pipeline.run import Row, plan_rows
from rolekd.pipeline.schedule_plan import PlannedSchedule, plan_schedules
from rolekd.pipeline.stats import paired_difference

SUMMARY = "search_summary.json"
SCHEDULE = "schedule.json"
REPORT = "report.json"
KD_BASELINE = "student_kd"  # the row every scheduled KD student row is paired with


# ---- small readers ------------------------------------------------------------------------------


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is not there (yet)."""
    return json.loads(path.read_text()) if path.is_file() else None


def missing_line(what: str, paths: list[str]) -> list[str]:
    """One line naming what a section could not find (nothing when all was there)."""
    return ["", f"Not in the run folder (yet), skipped: {what} {', '.join(paths)}."] if paths else []


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def signed(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.2f}"


# ---- 1. search signal ---------------------------------------------------------------------------


def binomial_se(acc: float, n: int) -> float:
    """Standard error of one accuracy ``acc`` measured on ``n`` images."""
    return math.sqrt(acc * (1 - acc) / n)


def signal_row(plan: PlannedSchedule, summary: dict[str, Any], n_val: int) -> str:
    accs = list(summary["final_val_acc"].values())
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    se = binomial_se(statistics.fmean(accs), n_val)
    ratio = f"{std / se:.2f}" if se > 0 else "–"
    return (f"| {plan.ref} | {summary.get('seed', plan.search_seed)} | {len(accs)} | "
            f"{100 * min(accs):.1f} – {100 * max(accs):.1f} | {pct(std)} | {pct(se)} | {ratio} | "
            f"{summary.get('lineage_matches_history', '–')} |")


def search_signal(run: Path, cfg: ExperimentConfig) -> list[str]:
    n_val = cfg.data.reduced_val
    lines = [f"Validation split: {n_val} images (data.reduced_val). Accuracies in %, std and SE in points.", "",
             "| search | seed | trials | final val % (min – max) | std over trials | binomial SE of one accuracy "
             "| std / SE | lineage matches history |", "|---|---:|---:|---|---:|---:|---:|---|"]
    missing = []
    for plan in plan_schedules(cfg):
        if not plan.searched:
            continue
        path = run / plan.folder / "search" / SUMMARY
        summary = read_json(path)
        if summary is None or not summary.get("final_val_acc"):
            missing.append(str(path.relative_to(run)))
            continue
        lines.append(signal_row(plan, summary, n_val))
    return lines + missing_line("search summaries", missing)


# ---- 2. schedules -------------------------------------------------------------------------------


def policy_l1(a: Policy, b: Policy) -> float:
    """L1 distance between two policies' probability vectors (30 entries, each in 0..1), entry by entry."""
    return sum(abs(x.prob - y.prob) for x, y in zip(a.entries, b.entries)) / MAX_PROB


def mean_l1(a: Schedule, b: Schedule, epochs: int) -> float:
    """Mean per-epoch L1 distance of two schedules, both stretched to ``epochs`` as the rows replay them."""
    return statistics.fmean(policy_l1(x, y) for x, y in zip(a.stretch(epochs).policies, b.stretch(epochs).policies))


def mean_prob_sum(s: Schedule) -> float:
    return statistics.fmean(p.prob_sum for p in s.policies)


def augmented_epochs(s: Schedule) -> int:
    """Epochs whose policy can fire at all (Σp > 0)."""
    return sum(1 for p in s.policies if p.prob_sum > 0)


def load_schedules(run: Path, cfg: ExperimentConfig) -> tuple[dict[str, Schedule], list[str]]:
    """The run's schedules by ref, in the run's order, and the schedule files not there yet."""
    found, missing = {}, []
    for plan in plan_schedules(cfg):
        path = run / plan.folder / SCHEDULE
        if path.is_file():
            found[plan.ref] = Schedule.load(path)
        else:
            missing.append(str(path.relative_to(run)))
    return found, missing


def schedules(run: Path, cfg: ExperimentConfig) -> list[str]:
    epochs = cfg.student.train.epochs
    found, missing = load_schedules(run, cfg)
    plans = {p.ref: p for p in plan_schedules(cfg)}
    lines = [f"Every schedule stretched to the student's {epochs} epochs (`Schedule.stretch`, as its rows replay it). "
             f"Σp: the sum of a policy's {NUM_ENTRIES} firing probabilities (at most {NUM_ENTRIES}).", "",
             f"| schedule | from | epochs as found | mean Σp at {epochs} epochs | epochs with any augmentation |",
             "|---|---|---:|---:|---:|"]
    for ref, s in found.items():
        at = s.stretch(epochs)
        lines.append(f"| {ref} | {plans[ref].stage} | {s.epochs} | {mean_prob_sum(at):.2f} "
                     f"| {augmented_epochs(at)} / {epochs} |")
    lines += missing_line("schedules", missing)
    refs = list(found)
    if len(refs) < 2:
        return lines
    dist = {(a, b): mean_l1(found[a], found[b], epochs) for a in refs for b in refs if a != b}
    lines += ["", f"Mean per-epoch L1 distance between the probability vectors (0 = the same policies; "
                  f"at most {NUM_ENTRIES}):", "",
              "| | " + " | ".join(refs) + " |", "|---|" + "---:|" * len(refs)]
    for a in refs:
        lines.append(f"| {a} | " + " | ".join("–" if a == b else f"{dist[a, b]:.2f}" for b in refs) + " |")
    searched = [r for r in refs if plans[r].role == "student"]
    between = [dist[a, b] for i, a in enumerate(searched) for b in searched[i + 1:]]
    lines.append("")
    if between:
        lines.append(f"Between the student's searches ({len(between)} pair{'s' if len(between) != 1 else ''}): "
                     f"mean L1 {statistics.fmean(between):.2f}.")
    for other in [r for r in refs if plans[r].role != "student"]:
        if searched:
            lines.append(f"The student's searches against {other}: mean L1 "
                         f"{statistics.fmean(dist[s, other] for s in searched):.2f} (mean over searches).")
    return lines


# ---- 3. fit -------------------------------------------------------------------------------------


def last_epoch(run: Path, row: Row, seed: int, epochs: int) -> dict[str, Any] | None:
    """A seed's last metrics line when its training finished (its last epoch evaluated), else None."""
    rows = read_jsonl(seed_folder(run / row.folder, seed) / "metrics.jsonl")
    if not rows or rows[-1].get("epoch") != epochs or "val_acc" not in rows[-1]:
        return None
    return rows[-1]


def finished(run: Path, cfg: ExperimentConfig, row: Row) -> dict[int, dict[str, Any]]:
    """The last epoch of every finished seed of a row, by seed."""
    epochs = row.epochs(cfg)
    lasts = {seed: last_epoch(run, row, seed, epochs) for seed in cfg.pipeline.seeds}
    return {seed: m for seed, m in lasts.items() if m is not None}


def fit(run: Path, cfg: ExperimentConfig) -> list[str]:
    n = len(cfg.pipeline.seeds)
    lines = ["| row | seeds | train % (last epoch, mean over seeds) | test % (last epoch) | gap (points) |",
             "|---|---:|---:|---:|---:|"]
    missing = []
    for row in plan_rows(cfg):
        last = list(finished(run, cfg, row).values())
        if not last:
            missing.append(row.key)
            continue
        train = statistics.fmean(m["train_acc"] for m in last)
        test = statistics.fmean(m["val_acc"] for m in last)
        lines.append(f"| {row.label} | {len(last)} / {n} | {100 * train:.1f} | {pct(test)} "
                     f"| {100 * (train - test):.1f} |")
    return lines + missing_line("rows with no finished seed:", missing)


# ---- 4. against the KD baseline -----------------------------------------------------------------


def scheduled_kd_rows(cfg: ExperimentConfig) -> list[Row]:
    """The KD student rows trained with a schedule (no agents), in the order of the run's schedules."""
    order = [p.ref for p in plan_schedules(cfg)]
    rows = [r for r in plan_rows(cfg) if r.role == "student" and r.kd and r.schedule and not r.agents]
    return sorted(rows, key=lambda r: (order.index(r.schedule), r.cutout is not None, r.cutout or 0))


def delta_from_metrics(run: Path, cfg: ExperimentConfig, row: Row, base: Row) -> dict[str, Any] | None:
    """The paired last-epoch difference (row − KD baseline) over the seeds both finished."""
    a, b = finished(run, cfg, row), finished(run, cfg, base)
    seeds = [s for s in cfg.pipeline.seeds if s in a and s in b]
    if not seeds:
        return None
    return paired_difference([a[s]["val_acc"] for s in seeds], [b[s]["val_acc"] for s in seeds], "better", "worse")


def kd_deltas(run: Path, cfg: ExperimentConfig, report: dict[str, Any] | None) -> list[str]:
    base = next((r for r in plan_rows(cfg) if r.key == KD_BASELINE), None)
    if base is None:
        return [f"No KD baseline row (`{KD_BASELINE}` is not in pipeline.baselines): nothing to pair with."]
    given = {c["row"]: c for c in (report or {}).get("comparisons", []) if c["reference"] == KD_BASELINE}
    default = cfg.data.resolved_schedule_cutout
    lines = ["Last-epoch test accuracy of the row minus the KD baseline's, seed by seed (same teacher, same seed); "
             "the interval is the mean's 95 % Student-t interval over seeds.", "",
             "| schedule | cutout | mean Δ (points) | 95 % interval | per seed | seeds | from |",
             "|---|---:|---:|---|---|---:|---|"]
    missing = []
    for row in scheduled_kd_rows(cfg):
        d, source = given.get(row.key), REPORT
        if d is None:
            d, source = delta_from_metrics(run, cfg, row, base), "metrics"
        if d is None:
            missing.append(row.key)
            continue
        interval = "–" if d["low"] is None else f"[{signed(d['low'])}, {signed(d['high'])}]"
        per = ", ".join(signed(x) for x in d["deltas"])
        cut = default if row.cutout is None else row.cutout
        lines.append(f"| {row.schedule} | {cut} | {signed(d['mean'])} | {interval} | {per} | {d['n']} | {source} |")
    return lines + missing_line("rows without a finished seed paired with the KD baseline:", missing)


def between_searches(report: dict[str, Any] | None, default_cutout: int) -> list[str]:
    """The report's spread between the independent stage-β searches next to the spread between seeds
    (``default_cutout``: the side of ``data.schedule_cutout``, which the report writes as None)."""
    entries = (report or {}).get("between_searches", [])
    if not entries:
        return [f"No `between_searches` in {REPORT} (the run has not finished, or it has one stage-β search)."]
    lines = ["From the report: the searches' A_S rows per cutout, the spread between searches next to the pooled "
             "spread between retrain seeds, and a search's mean Δ with the 95 % interval over searches.", "",
             "| A_S rows | cutout | mean over searches % | between searches (points) | between seeds (points) "
             "| reference | mean Δ (points) | 95 % interval over searches |", "|---|---:|---:|---:|---:|---|---:|---|"]
    for e in entries:
        cut = default_cutout if e["cutout"] is None else e["cutout"]
        for v in e["versus"] or [{"reference_label": "–", "mean": None, "low": None, "high": None}]:
            interval = "–" if v["low"] is None else f"[{signed(v['low'])}, {signed(v['high'])}]"
            lines.append(f"| {', '.join(e['searches'])} | {cut} | {pct(e['mean'])} | "
                         f"{100 * e['between_searches_std']:.2f} | {100 * e['between_seeds_std']:.2f} | "
                         f"{v['reference_label']} | {signed(v['mean'])} | {interval} |")
    return lines


# ---- 5. what the search saw of the policies it explored -----------------------------------------


def ranking_accuracies(search: Path) -> dict[tuple[str, int], float]:
    """Every trial's validation accuracy at every ranking, by (trial, epoch); a resumed generation's rewritten line
    wins over the one it replaced."""
    accs = {}
    for progress in sorted((search / TRIALS).glob(f"*/{PROGRESS}")):
        for line in read_jsonl(progress):
            if "val_acc" in line:
                accs[progress.parent.name, int(line["epoch"])] = float(line["val_acc"])
    return accs


def exploit_outcomes(search: Path, interval: int) -> list[dict[str, Any]]:
    """Per exploit: Σp of the source's policy and of the explored one, and both trials' validation accuracies at the
    next ranking (None where that ranking is not in the trials' progress)."""
    accs = ranking_accuracies(search)
    out = []
    for event in read_history(search / HISTORY):
        after = event.epoch + interval
        out.append({"epoch": event.epoch, "source_p": event.old_policy.prob_sum,
                    "explored_p": event.new_policy.prob_sum,
                    "target_acc": accs.get((event.target, after)), "source_acc": accs.get((event.source, after))})
    return out


def paired(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exploits whose target and source were both ranked again."""
    return [o for o in outcomes if o["target_acc"] is not None and o["source_acc"] is not None]


def searched_outcomes(run: Path, cfg: ExperimentConfig) -> tuple[list[tuple[PlannedSchedule, list[dict[str, Any]]]],
                                                                list[str]]:
    """Every searched schedule's exploit outcomes, in the run's order, and the histories not there yet."""
    found, missing = [], []
    for plan in plan_schedules(cfg):
        if not plan.searched:
            continue
        search = run / plan.folder / "search"
        if not (search / HISTORY).is_file():
            missing.append(str((search / HISTORY).relative_to(run)))
            continue
        found.append((plan, exploit_outcomes(search, cfg.search.perturbation_interval)))
    return found, missing


def exploit_row(plan: PlannedSchedule, outcomes: list[dict[str, Any]]) -> str:
    both = paired(outcomes)
    if not both:
        return f"| {plan.ref} | {len(outcomes)} | 0 | – | – | – | – | – |"
    d = paired_difference([o["target_acc"] for o in both], [o["source_acc"] for o in both], "", "")
    interval = "–" if d["low"] is None else f"[{signed(d['low'])}, {signed(d['high'])}]"
    below = sum(1 for x in d["deltas"] if x < 0)
    return (f"| {plan.ref} | {len(outcomes)} | {len(both)} | {statistics.fmean(o['source_p'] for o in both):.1f} "
            f"| {statistics.fmean(o['explored_p'] - o['source_p'] for o in both):+.1f} | {signed(d['mean'])} "
            f"| {interval} | {below} / {len(both)} |")


def exploit_view(run: Path, cfg: ExperimentConfig) -> list[str]:
    lines = [f"At every exploit the target continues from its source's weights with the explored policy, the source "
             f"with its own; one interval ({cfg.search.perturbation_interval} epochs) later both are ranked on the "
             f"same validation images. Δ: the target's accuracy minus the source's at that ranking, mean over the "
             f"search's exploits with its 95 % t-interval; Σp as in section 2.", "",
             "| search | exploits | paired at the next ranking | source's Σp (mean) | explored − source Σp (mean) "
             "| Δ next ranking (points) | 95 % interval | explored below its source |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    found, missing = searched_outcomes(run, cfg)
    lines += [exploit_row(plan, outcomes) for plan, outcomes in found]
    return lines + missing_line("search histories", missing)


def plot_exploits(run: Path, cfg: ExperimentConfig, path: Path) -> int:
    """Section 5 as a PNG: every exploit's Δ at the next ranking against the epoch it was made at, one series per
    search; returns how many searches it drew."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rolekd.augment.plot import _atomic_savefig

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    found, _ = searched_outcomes(run, cfg)
    for plan, outcomes in found:
        both = paired(outcomes)
        ax.plot([o["epoch"] for o in both], [100 * (o["target_acc"] - o["source_acc"]) for o in both], "o",
                alpha=0.7, label=f"{plan.ref} ({plan.role})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("epoch of the exploit")
    ax.set_ylabel("explored − source, next ranking (points)")
    ax.set_title("What each search saw of the policies it explored")
    if found:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _atomic_savefig(fig, path, dpi=110)
    return len(found)


# ---- the whole analysis -------------------------------------------------------------------------


def load_run_config(run: Path) -> ExperimentConfig:
    path = run / CONFIG_FILE
    if not path.is_file():
        sys.exit(f"{path}: not found; expected the folder of a `rolekd run` (it writes {CONFIG_FILE} first)")
    return load_config(str(path))


def render(run: Path) -> str:
    cfg = load_run_config(run)
    report = read_json(run / REPORT)
    parts = [f"# Study analysis: {run.name}", "",
             f"Seeds {cfg.pipeline.seeds}; stage-β search seeds {cfg.pipeline.search_seeds}; student "
             f"{cfg.student.train.epochs} epochs, teacher {cfg.teacher.train.epochs}."
             + ("" if report is not None else f" No {REPORT}: the run has not finished; numbers from the metrics."),
             "", "## 1. Search signal", "", *search_signal(run, cfg),
             "", "## 2. Do the searches agree?", "", *schedules(run, cfg),
             "", "## 3. Fit", "", *fit(run, cfg),
             "", "## 4. Against the KD baseline", "", *kd_deltas(run, cfg, report),
             "", "### Between searches", "", *between_searches(report, cfg.data.resolved_schedule_cutout),
             "", "## 5. What each search saw of the policies it explored", "", *exploit_view(run, cfg)]
    return "\n".join(parts) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run folder of `rolekd run cpu/study2_cifar10_resnet8_w4a4`")
    p.add_argument("--plot", type=Path, help="also draw section 5 into this PNG")
    a = p.parse_args()
    print(render(a.run), end="")
    if a.plot is not None:
        plot_exploits(a.run, load_run_config(a.run), a.plot)


if __name__ == "__main__":
    main()
