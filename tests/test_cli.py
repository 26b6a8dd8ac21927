import subprocess
import sys

import pytest
import torch

from rolekd.cli.main import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args], capture_output=True, text=True, timeout=600)


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "search", "train", "distill", "eval", "export", "plot", "augment-preview"):
        assert cmd in out


def test_unknown_config_key_is_one_line_exit_2():
    r = run_cli("train", "demo", "--set", "teacher.train.epochz=1")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "teacher.train.epochz: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_then_eval_on_the_embedded_demo(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["--set", "teacher.train.epochs=2", "--set", "teacher.model_args.width=8", "--out", str(out)]
    assert main(["train", "demo", *args]) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(out / "best.pt"), "--config", "demo"]) == 0
    assert "top-1" in capsys.readouterr().err
    # a second train into the same folder refuses without --resume, and --resume finishes instantly
    assert main(["train", "demo", *args]) == 2
    assert main(["train", "demo", *args, "--resume"]) == 0


def test_user_module_import_registers_a_model(tmp_path):
    mod = tmp_path / "my_models.py"
    mod.write_text(
        "from torch import nn\nfrom rolekd.models import register_model\n"
        "@register_model('my_linear')\n"
        "def my_linear(num_classes, in_channels=3):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 32 * 32, num_classes))\n"
    )
    out = tmp_path / "o"
    r = run_cli("train", "demo", "--import", str(mod), "--set", "teacher.model=my_linear",
                "--set", "teacher.model_args={}", "--set", "teacher.train.epochs=1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["meta"]["model"] == "my_linear"


def test_agent_preview_restores_the_learned_hard_augmentor(tmp_path, capsys):
    small = ["--set", "teacher.model_args.width=8", "--set", "student.model_args.width=8"]
    t, s = tmp_path / "t", tmp_path / "s"
    assert main(["train", "demo", *small, "--set", "teacher.train.epochs=1", "--out", str(t)]) == 0
    assert main(["distill", "demo", *small, "--set", "student.train.epochs=1", "--set", "distill.method=soft",
                 "--set", "student.agents=[hard]", "--teacher", str(t / "best.pt"), "--out", str(s)]) == 0
    capsys.readouterr()
    png = tmp_path / "hard.png"
    args = ["augment-preview", "--config", "demo", *small, "--agent", "hard", "--teacher", str(t / "best.pt"), "-n", "4"]
    assert main([*args, "--student", str(s / "last.pt"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "untrained" not in capsys.readouterr().err  # the augmentor came from last.pt
    assert main([*args, "--student", str(s / "best.pt"), "-o", str(png)]) == 0  # best.pt keeps the model only
    assert "untrained" in capsys.readouterr().err
    assert main(["augment-preview", "--agent", "hard", "--teacher", str(t / "best.pt")]) == 2  # no --student
