"""The packaged schedules (src/rolekd/schedules): regenerated from their published sources, checked
against a port of PBA's own parser, and usable by name wherever a schedule file is accepted.

Regenerate the packaged files after changing a source or the recipe: ``python tests/test_packaged_schedules.py``.
"""

from __future__ import annotations

import ast
import collections
import json
import sys
from pathlib import Path

import pytest

from rolekd.augment import PBA_ORDER, Policy, Schedule, ScheduleError
from rolekd.augment.schedule import PACKAGED_DIR, packaged_schedules, resolve_schedule

#: The repository's copy (what is committed; an installed rolekd carries the JSON files, not the sources).
REPO_DIR = Path(__file__).resolve().parents[1] / "src" / "rolekd" / "schedules"
SOURCES = REPO_DIR / "sources"
EPOCHS = 200

#: name -> (source log, epochs the search ran, provenance written into the packaged file)
RECIPES = {
    "pba-rcifar10": (
        "pba-rcifar10.txt",
        EPOCHS,
        "arcelien/pba commit a9cc308d936dee488aab7e3582ab7a47167b587a, schedules/rcifar10_16_wrn.txt: PBA's published "
        "schedule, searched on reduced CIFAR-10 (4,000 images) with PBA's WRN-40-2 (WRN-28-2 in its code), 16 trials, "
        "200 epochs; PBA reuses it for CIFAR-100 and full CIFAR-10. Converted with rolekd's Schedule.from_pba_log "
        "(PBA's parse_log), PBA's py2 op order (PBA commit 950397f).",
    ),
    "role-kd-cifar100-resnet18-w2a2": (
        "role-kd-cifar100-resnet18-w2a2.txt",
        EPOCHS,
        "bigaidream-projects/role-kd commit 42a9362aa42431d1c3090d420ed2534eac2843c3, results/cifar100_ResNet18_Student_"
        "2_1e-05_200_0.001_128_MHGD-RKD-SVD_adam_0.4_KD_search/pbt_policy_0.txt (trial 0, the one its best.txt names): "
        "the paper's stage-beta schedule A_S for the W/A 2/2 DoReFa ResNet-18 student on CIFAR-100, searched while the "
        "student learned by KD (MHGD-RKD-SVD, lambda 0.4) from a full-precision ResNet-18 teacher; 16 trials, 200 epochs, "
        "4,000 training images, no cutout in the search. Converted with rolekd's Schedule.from_pba_log (PBA's "
        "parse_log), PBA's py2 op order (role-kd ran under Python 2.7).",
    ),
}


def build(name: str) -> Schedule:
    """The recipe: a packaged schedule from its source log."""
    source, epochs, provenance = RECIPES[name]
    lines = (SOURCES / source).read_text().splitlines()
    return Schedule.from_pba_log(lines, epochs).with_provenance(provenance)


# ------------------------------------------------------------------ reference: PBA's parser, ported


_PbtUpdate = collections.namedtuple(
    "_PbtUpdate",
    ["target_trial_name", "clone_trial_name", "target_trial_epochs", "clone_trial_epochs", "old_config", "new_config"],
)
#: PBA's HP_TRANSFORM_NAMES (pba/augmentation_transforms_hp.py, HP_TRANSFORMS at commit a9cc308).
_PBA_HP_TRANSFORM_NAMES = [
    "Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert", "Sharpness", "Posterize",
    "ShearX", "Solarize", "ShearY", "Equalize", "AutoContrast", "Cutout", "Contrast",
]  # fmt: skip


def pba_parse_log(file_path: Path, epochs: int) -> list:
    """Port of ``pba.utils.parse_log`` (arcelien/pba a9cc308), without TensorFlow."""
    raw_policy = []
    for line in open(file_path).readlines():
        try:
            raw_policy_line = json.loads(line)
        except Exception:
            raw_policy_line = ast.literal_eval(line)
        raw_policy.append(raw_policy_line)
    for r in raw_policy:
        for i in [4, 5]:
            if isinstance(r[i], list):
                r[i] = {"hp_policy": r[i]}
    raw_policy = [_PbtUpdate(*r) for r in raw_policy]
    policy = []
    to_truncate = None
    for i in range(len(raw_policy) - 1):
        if raw_policy[i][0] != raw_policy[i + 1][1]:
            to_truncate = i
    if to_truncate is not None:
        raw_policy = raw_policy[to_truncate + 1 :]
    policy.append([raw_policy[0][3], raw_policy[0][4]["hp_policy"]])
    for i in range(len(raw_policy) - 1):
        this_iter = raw_policy[i + 1][3] - raw_policy[i][3]
        assert this_iter >= 0
        assert raw_policy[i][0] == raw_policy[i + 1][1]
        policy.append([this_iter, raw_policy[i][5]["hp_policy"]])
    policy.append([epochs - raw_policy[-1][3], raw_policy[-1][5]["hp_policy"]])
    assert epochs == sum(p[0] for p in policy)
    return policy


def pba_parse_log_schedule(file_path: Path, epochs: int, multiplier: float = 1) -> list:
    """Port of ``pba.utils.parse_log_schedule``: one 60-int policy per epoch."""
    policy = pba_parse_log(file_path, epochs)
    schedule = []
    count = 0
    for num_iters, pol in policy:
        for _ in range(int(num_iters * multiplier)):
            schedule.append(pol)
            count += 1
    for _ in range(int(epochs * multiplier) - count):
        schedule.append(policy[-1][1])
    return schedule


def pba_decode(policy_emb: list[int]) -> list[tuple[str, float, int]]:
    """``pba.data_utils.DataSet.parse_policy`` on one 60-int list: the two halves, each by ``parse_policy``."""

    def parse_policy(half: list[int]) -> list[tuple[str, float, int]]:
        assert len(half) == 2 * len(_PBA_HP_TRANSFORM_NAMES)
        return [(x, half[2 * i] / 10.0, half[2 * i + 1]) for i, x in enumerate(_PBA_HP_TRANSFORM_NAMES)]

    split = len(policy_emb) // 2
    return parse_policy(policy_emb[:split]) + parse_policy(policy_emb[split:])


def slots(policy: Policy) -> list[tuple[str, float, int]]:
    return [(e.op, e.prob / 10.0, e.mag) for e in policy.entries]


# ------------------------------------------------------------------ the packaged files


def test_the_packaged_names() -> None:
    assert sorted(packaged_schedules()) == sorted(RECIPES)
    assert list(PBA_ORDER) == _PBA_HP_TRANSFORM_NAMES


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_packaged_file_is_regenerated_from_its_source(name: str, tmp_path: Path) -> None:
    regenerated = build(name).save(tmp_path / f"{name}.json").read_text()
    assert (REPO_DIR / f"{name}.json").read_text() == regenerated, (
        f"{name}.json drifted from sources/{RECIPES[name][0]}; run python tests/test_packaged_schedules.py"
    )
    loaded = Schedule.load(name)
    assert loaded == build(name) and loaded.provenance == RECIPES[name][2]
    assert "commit" in loaded.provenance and loaded.epochs == EPOCHS


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_packaged_schedule_matches_pbas_own_parse(name: str) -> None:
    reference = pba_parse_log_schedule(SOURCES / RECIPES[name][0], EPOCHS)
    assert len(reference) == EPOCHS
    schedule = Schedule.load(name)
    for epoch in (0, 100, EPOCHS - 1):
        assert slots(schedule.policy_for_epoch(epoch)) == pba_decode(reference[epoch]), f"epoch {epoch}"
    assert [p.to_pba_list() for p in schedule.policies] == reference  # and every other epoch
    # PBA's replay stretched to 1.5x the search length (a non-integer multiplier) = Schedule.stretch
    longer = pba_parse_log_schedule(SOURCES / RECIPES[name][0], EPOCHS, multiplier=1.5)
    assert [p.to_pba_list() for p in schedule.stretch(300).policies] == longer


def test_decoded_summaries_match_the_reference_note() -> None:
    """docs/reference: rcifar10 = 17 segments, 12 all-zero epochs first; role-kd A_S = all-zero to epoch 56."""
    pba = Schedule.load("pba-rcifar10")
    assert len(pba.segments) == 17 and pba.segments[0] == (12, Policy.zeros())
    rkd = Schedule.load("role-kd-cifar100-resnet18-w2a2")
    assert [n for n, _ in rkd.segments] == [57, 3, 72, 39, 29] and rkd.segments[0][1] == Policy.zeros()
    last = {(e.op, e.prob, e.mag) for e in rkd.policy_for_epoch(199).entries}
    assert ("Contrast", 10, 6) in last


# ------------------------------------------------------------------ provenance field


def test_provenance_round_trips_and_is_optional(tmp_path: Path) -> None:
    plain = Schedule.from_policies([Policy.zeros(), Policy.single("Rotate")])
    assert plain.provenance is None and "provenance" not in plain.to_dict()
    assert Schedule.load(plain.save(tmp_path / "plain.json")).provenance is None
    tagged = plain.with_provenance("made by hand")
    assert tagged == plain  # provenance is not part of the schedule's content
    doc = json.loads(tagged.save(tmp_path / "tagged.json").read_text())
    assert doc["provenance"] == "made by hand"
    assert Schedule.load(tmp_path / "tagged.json").provenance == "made by hand"
    assert tagged.stretch(4).provenance is None
    doc["provenance"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ScheduleError, match='bad.json: "provenance" must be a non-empty string'):
        Schedule.load(tmp_path / "bad.json")


# ------------------------------------------------------------------ names wherever a schedule is accepted


def test_names_resolve_and_files_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_schedule("pba-rcifar10") == PACKAGED_DIR / "pba-rcifar10.json"
    assert resolve_schedule(Path("pba-rcifar10")) == PACKAGED_DIR / "pba-rcifar10.json"  # as argparse may pass it
    monkeypatch.chdir(tmp_path)
    own = Schedule.constant(Policy.single("Invert"), 5)
    own.save(tmp_path / "pba-rcifar10")  # a file of that name in the working directory wins
    assert Schedule.load("pba-rcifar10") == own


def test_an_unknown_name_is_one_line_listing_the_packaged_names() -> None:
    with pytest.raises(ScheduleError) as err:
        Schedule.load("pba-cifar11")
    text = str(err.value)
    assert "\n" not in text and "not a packaged schedule" in text
    assert "pba-rcifar10" in text and "role-kd-cifar100-resnet18-w2a2" in text


def test_cli_schedule_option_takes_a_name() -> None:
    from rolekd.pipeline.commands import _load_schedule

    assert _load_schedule("role-kd-cifar100-resnet18-w2a2") == build("role-kd-cifar100-resnet18-w2a2")
    with pytest.raises(ScheduleError, match="packaged schedule"):
        _load_schedule("nope")


def test_stage_alpha_schedule_takes_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rolekd.config import load_config
    from rolekd.pipeline.run import given_schedule

    monkeypatch.chdir(tmp_path)
    cfg = load_config("demo", ["pipeline.stage_alpha.schedule=pba-rcifar10"])
    assert given_schedule(cfg) == PACKAGED_DIR / "pba-rcifar10.json"
    cfg = load_config("demo", ["pipeline.stage_alpha.schedule=missing.json"])
    with pytest.raises(FileNotFoundError, match="pipeline.stage_alpha.schedule") as err:
        given_schedule(cfg)
    assert "\n" not in str(err.value) and "pba-rcifar10, role-kd-cifar100-resnet18-w2a2" in str(err.value)


if __name__ == "__main__":  # regenerate the packaged files from their sources
    for name in RECIPES:
        print(build(name).save(REPO_DIR / f"{name}.json"), file=sys.stderr)
