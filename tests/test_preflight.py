"""The pre-flight (issue 19, item 6): a run that would fail after an hour fails in seconds, before any training,
in one line naming the training, both networks and the config key to change."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rolekd.config import load_config
from rolekd.pipeline.preflight import PreflightError, Training, preflight
from rolekd.pipeline.run import plan_rows
from rolekd.pipeline.setup import prepare

# A torchvision-style network registered without taps: rolekd infers them from layer1..layer3.
TV_MODELS = """
from torch import nn
from rolekd.models import register_model

class TinyResNet(nn.Module):
    def __init__(self, num_classes, width):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.stem = block(3, width)
        self.layer1, self.layer2, self.layer3 = block(width, width), block(width, 2 * width), block(2 * width, 4 * width)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))

@register_model("tv_tiny")
def tv_tiny(num_classes, width=8):
    return TinyResNet(num_classes, width)

class NoStages(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))

@register_model("no_stages")
def no_stages(num_classes):
    return NoStages(num_classes)
"""


def _rows(cfg):
    return [Training(r.label, r.role, r.kd, r.warm_start, r.agents, r.schedule is not None) for r in plan_rows(cfg)]


def test_trainings_alike_but_for_their_label_are_stepped_once():
    cfg = load_config("demo")
    # stage β's student and the KD student with A_T train alike (KD, a policy): one check for both
    kinds = {(t.role, t.kd, t.warm_start, t.agents, t.scheduled) for t in _rows(cfg)}
    assert preflight(cfg, prepare(cfg), _rows(cfg)) == len(kinds) < len(plan_rows(cfg))


def test_a_student_the_method_cannot_relate_to_the_teacher_is_named_with_both_networks():
    cfg = load_config("demo", ["student.model_args.width=4", "distill.method=mhgd"])
    with pytest.raises(PreflightError) as err:
        preflight(cfg, prepare(cfg), _rows(cfg))
    text = str(err.value)
    assert "\n" not in text and text.startswith("pre-flight, Student + KD")
    assert "resnet8 (width=8" in text and "student resnet8 (width=4)" in text  # both architectures
    assert "channel" in text and "student.taps" in text


def _cli(*args, cwd):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args], capture_output=True, text=True,
                       timeout=600, cwd=cwd)
    return r, time.perf_counter() - t0


def _error(r) -> str:
    """The one error line (progress notes may precede it on stderr), after checking there is no traceback."""
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rolekd: error:")]
    return line


def test_run_with_an_imported_torchvision_style_pair_fails_before_stage_alpha(tmp_path):
    (tmp_path / "tv_models.py").write_text(TV_MODELS)
    out = tmp_path / "run"
    r, seconds = _cli("run", "demo", "--import", "tv_models.py", "--set", "teacher.model=tv_tiny",
                      "--set", "teacher.model_args={width: 8}", "--set", "student.model=tv_tiny",
                      "--set", "student.model_args={width: 4}", "--set", "distill.method=iikd", "--out", str(out),
                      cwd=tmp_path)
    err = _error(r)
    assert "pre-flight" in err and "mhgd" in err and "tv_tiny (width=4)" in err and "teacher.taps" in err
    assert not (out / "stage_alpha" / "search").exists() and not list(out.rglob("*.pt"))  # nothing trained
    assert seconds < 120  # seconds, not the hour a stage α search and retrain would take


def test_a_model_without_taps_names_the_key_to_set_before_any_training(tmp_path):
    (tmp_path / "tv_models.py").write_text(TV_MODELS)
    out = tmp_path / "run"
    r, _ = _cli("run", "demo", "--import", "tv_models.py", "--set", "teacher.model=no_stages",
                "--set", "teacher.model_args={}", "--set", "student.model=no_stages", "--set", "student.model_args={}",
                "--set", "student.w_bits=32", "--set", "student.a_bits=32", "--set", "distill.method=iikd",
                "--out", str(out), cwd=tmp_path)
    assert "pre-flight" in _error(r) and "taps: [" in _error(r) and not list(out.rglob("*.pt"))


def test_an_agent_that_needs_a_teacher_is_refused_before_a_training_without_one(tmp_path):
    out = tmp_path / "t"
    r, _ = _cli("train", "demo", "--role", "student", "--set", "student.agents=[backward]", "--out", str(out),
                cwd=tmp_path)
    assert "pre-flight, student training" in _error(r) and not (out / "last.pt").exists()


@pytest.mark.parametrize("command, setting, expected", [
    (["train", "demo", "--role", "student"], "student.agents=[backward,hrad]",
     "student.agents: unknown augmentation agent 'hrad'; expected one of: backward"),  # + agents other tests registered
    (["run", "demo"], "student.agents=[hrad]", "student.agents: unknown augmentation agent 'hrad'"),
    (["search", "demo", "--role", "teacher"], "teacher.model=resnet1000", "teacher.model: unknown model 'resnet1000'"),
    (["search", "demo", "--role", "teacher"], "distill.method=hinton", "distill.method: unknown distill method"),
])
def test_an_unknown_name_is_one_line_before_any_data_loads(tmp_path, monkeypatch, capsys, command, setting, expected):
    from rolekd.cli.main import main

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the names were checked")

    monkeypatch.setattr("rolekd.pipeline.setup.prepare", no_data)
    monkeypatch.setattr("rolekd.pipeline.search_stage.prepare", no_data)
    assert main([*command, "--set", setting, "--out", str(tmp_path / "out")]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rolekd: error:")]
    assert len(error) == 1 and error[0].startswith(f"rolekd: error: {expected}")
    assert not (tmp_path / "out").exists()  # refused before the folder was claimed
