import json
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
    mod = _write_user_models(tmp_path)
    out = tmp_path / "o"
    r = run_cli("train", "demo", "--import", str(mod), "--set", "teacher.model=my_linear",
                "--set", "teacher.model_args={}", "--set", "teacher.train.epochs=1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["meta"]["model"] == "my_linear"


def test_eval_of_the_packed_export_equals_eval_of_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "s"
    small = ["--set", "student.model_args.width=8", "--set", "student.train.epochs=1", "--set", "student.init_from=scratch"]
    assert main(["train", "demo", "--role", "student", *small, "--out", str(out)]) == 0
    assert main(["export", str(out / "last.pt"), "-o", str(tmp_path / "s.rkd")]) == 0
    capsys.readouterr()
    lines = []
    for path in (out / "last.pt", tmp_path / "s.rkd"):
        assert main(["eval", str(path), "--config", "demo"]) == 0
        lines.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert "W/A 2/2" in lines[0] and "top-1" in lines[0]
    assert lines[0] == lines[1]  # same accuracy, loss and sizes: the deployed weights are the trained ones


def _write_user_models(folder):
    mod = folder / "my_models.py"
    mod.write_text(
        "from torch import nn\nfrom rolekd.models import register_model\n"
        "@register_model('my_linear')\n"
        "def my_linear(num_classes, in_channels=3):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 32 * 32, num_classes))\n"
    )
    return mod


def test_search_trials_know_the_users_imported_models(tmp_path):
    """Ray trials are other processes: a model registered by --import must exist there too."""
    mod = _write_user_models(tmp_path)
    out = tmp_path / "s"
    r = run_cli("search", "demo", "--role", "teacher", "--import", str(mod), "--set", "teacher.model=my_linear",
                "--set", "teacher.model_args={}", "--set", "search.population=2", "--set", "search.epochs=1",
                "--set", "search.cpus_per_trial=1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "search_summary.json").read_text())
    assert len(summary["final_val_acc"]) == 2 and summary["failed_trials"] == []


def test_dotted_imports_replay_in_another_process_from_another_folder(tmp_path):
    _write_user_models(tmp_path)
    code = ("import json, sys; from rolekd.plugins import import_user_modules, plugin_state; "
            "import_user_modules(['my_models']); print(json.dumps(plugin_state()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = r.stdout.strip()
    replay = ("import json, sys; from rolekd.plugins import load_plugins; from rolekd.models import available_models; "
              f"load_plugins(json.loads({state!r})); print('my_linear' in available_models())")
    r = subprocess.run([sys.executable, "-c", replay], capture_output=True, text=True, cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_import_of_a_missing_file_is_one_line(tmp_path):
    r = run_cli("train", "demo", "--import", str(tmp_path / "nope.py"))
    assert r.returncode == 2
    assert "nope.py: file not found" in r.stderr and r.stderr.strip().count("\n") == 0


def test_import_of_a_broken_file_is_one_line_naming_the_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def oops(:\n")
    r = run_cli("train", "demo", "--import", str(bad))
    assert r.returncode == 2
    assert "broken.py: SyntaxError" in r.stderr and r.stderr.strip().count("\n") == 0


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
