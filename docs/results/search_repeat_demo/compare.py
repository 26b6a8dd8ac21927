"""Compare two `rolekd run` folders: schedules, search histories (less wall-clock `time`), searches' final
accuracies, and every row of the report (less wall times). Prints one line per item and exits 1 on a difference.

    python docs/results/search_repeat_demo/compare.py RUN_A RUN_B
"""

import json
import sys
from pathlib import Path


def history(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()]


def rows(path: Path) -> dict:
    return {r["key"]: {k: v for k, v in r.items() if "time" not in k and "wall" not in k}
            for r in json.loads(path.read_text())["rows"]}


def main(a: Path, b: Path) -> int:
    checks = []
    for stage in ("stage_alpha", "stage_beta"):
        s = f"{stage}/search"
        checks.append((f"{stage}/schedule.json", (a / stage / "schedule.json").read_bytes() ==
                       (b / stage / "schedule.json").read_bytes()))
        checks.append((f"{s}/history.jsonl (less time)", history(a / s / "history.jsonl") == history(b / s / "history.jsonl")))
        sa, sb = (json.loads((r / s / "search_summary.json").read_text()) for r in (a, b))
        checks.append((f"{s} final accuracies {sa['final_val_acc']}", sa["final_val_acc"] == sb["final_val_acc"]))
        checks.append((f"{s} exploits {sa['exploits']} / {sb['exploits']}, trials lost {sa['failed_trials']} / "
                       f"{sb['failed_trials']}", sa["exploits"] == sb["exploits"]))
    ra, rb = rows(a / "report.json"), rows(b / "report.json")
    for key in ra:
        checks.append((f"report row {key}: last {ra[key]['last']} / {rb[key]['last']}", ra[key] == rb.get(key)))
    for what, same in checks:
        print(f"{'same' if same else 'DIFFERENT'}  {what}")
    return 0 if all(same for _, same in checks) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
