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
    for cmd in ("run", "search", "train", "distill", "eval", "export", "plot", "augment-preview", "config"):
        assert cmd in out


def test_unknown_config_key_is_one_line_exit_2():
    r = run_cli("train", "demo", "--set", "teacher.train.epochz=1")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "teacher.train.epochz: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_user_module_import_registers_a_model(tmp_path):
    mod = _write_user_models(tmp_path)
    out = tmp_path / "o"
    r = run_cli("train", "demo", "--import", str(mod), "--set", "teacher.model=my_linear",
                "--set", "teacher.model_args={}", "--set", "teacher.train.epochs=1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["meta"]["model"] == "my_linear"


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---- bad inputs: one line on stderr naming what is wrong, exit 2 (issue 19) ------------------------------------


def assert_one_line_error(r, *expected, status=None):
    """Exit 2, no traceback, and stderr is one error line naming ``expected`` — after the command's ``status`` line
    when the error can only show once the command has said what it trains (loading weights)."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    if status is not None:
        assert lines[0].startswith(status), r.stderr
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("rolekd: error: "), r.stderr
    for text in expected:
        assert text in lines[0], r.stderr


RESNET8 = {"model": "resnet8", "num_classes": 10, "model_args": {"width": 8, "in_channels": 3},
           "w_bits": 32, "a_bits": 32, "role": "teacher"}


def _resnet8_checkpoint(path, bare=False):
    """A rolekd checkpoint (or a bare state_dict) of the demo's teacher architecture, without training it."""
    from rolekd.quant import build_network
    from rolekd.training import save_checkpoint

    state = build_network(RESNET8).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if bare:
        torch.save(state, path)
    else:
        save_checkpoint(path, {"model": state, "meta": RESNET8, "epoch": 1})
    return path


CNN = ["--set", "teacher.model=cnn", "--set", "teacher.model_args={}", "--set", "teacher.train.epochs=1"]


def test_an_empty_config_file_is_one_line_not_the_default_experiment(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# TODO\n")
    r = run_cli("eval", str(tmp_path / "x.pt"), "--config", str(empty))
    assert_one_line_error(r, f"{empty}: the file is empty")


@pytest.mark.parametrize("bare, found", [(False, "holds weights of resnet8 (width=8, in_channels=3), 10 classes"),
                                         (True, "holds weights of a network of unknown architecture")])
def test_a_checkpoint_of_another_architecture_names_both_and_the_first_key(tmp_path, bare, found):
    ckpt = _resnet8_checkpoint(tmp_path / "r8.pt", bare)
    r = run_cli("train", "demo", *CNN, "--set", f"teacher.checkpoint={ckpt}", "--out", str(tmp_path / "t"))
    assert_one_line_error(r, f"teacher.checkpoint {ckpt} {found}", "expected cnn (in_channels=3), 10 classes",
                          "no 'stage1.0.weight'", status="training the teacher cnn")


def test_resume_into_a_folder_trained_with_another_model_is_one_line(tmp_path):
    out = tmp_path / "t"
    _resnet8_checkpoint(out / "last.pt")  # a folder from before folders recorded their config
    r = run_cli("train", "demo", *CNN, "--out", str(out), "--resume")
    assert_one_line_error(r, f"--resume: {out / 'last.pt'} holds weights of resnet8", "expected cnn",
                          status="training the teacher cnn")


@pytest.mark.parametrize("command", [["train", "demo"], ["run", "demo"]])
@pytest.mark.parametrize("under", [False, True])
def test_out_naming_an_existing_file_is_one_line(tmp_path, command, under):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker / "run" if under else blocker
    r = run_cli(*command, "--out", str(out))
    assert_one_line_error(r, f"--out {out}", "lies under the file" if under else "is an existing file")


def _claimed_folder(out, progress, overrides):
    """A folder claimed by a run of the demo with ``overrides``, holding its ``progress`` file."""
    from rolekd.config import dump_config, load_config

    (out / progress).parent.mkdir(parents=True)
    (out / progress).write_bytes(b"")
    (out / "config.yaml").write_text(dump_config(load_config("demo", overrides)))


@pytest.mark.parametrize("command, progress", [
    (["train", "demo"], "last.pt"),
    (["distill", "demo", "--teacher", "{teacher}"], "last.pt"),
    (["search", "demo", "--role", "teacher"], "search_state.json"),
])
def test_resume_with_other_settings_names_the_fields_that_differ(tmp_path, command, progress):
    out = tmp_path / "o"
    _claimed_folder(out, progress, ["teacher.train.lr=0.2", "student.train.lr=0.2", "data.train_subset=600"])
    teacher = _resnet8_checkpoint(tmp_path / "teacher.pt")
    args = [a.format(teacher=teacher) for a in command]
    r = run_cli(*args, "--out", str(out), "--resume")
    assert_one_line_error(r, f"{out} was made with another config: data.train_subset (saved 600, now None); "
                             "teacher.train.lr (saved 0.2, now 0.05); student.train.lr (saved 0.2, now 0.001)")


@pytest.mark.slow
def test_train_resume_with_the_same_settings_continues_and_records_the_config(tmp_path):
    out = tmp_path / "t"
    small = ["--set", "teacher.model_args.width=8", "--set", "teacher.train.epochs=1"]
    assert run_cli("train", "demo", *small, "--out", str(out)).returncode == 0
    assert "teacher:\n  model: resnet8" in (out / "config.yaml").read_text()
    assert run_cli("train", "demo", *small, "--out", str(out), "--resume").returncode == 0
    r = run_cli("train", "demo", *small, "--set", "teacher.train.lr=0.01", "--out", str(out), "--resume")
    assert_one_line_error(r, "teacher.train.lr (saved 0.05, now 0.01)")


def test_eval_of_a_training_folder_uses_its_last_checkpoint_and_says_so(tmp_path):
    folder = tmp_path / "teacher"
    _resnet8_checkpoint(folder / "last.pt")
    r = run_cli("eval", str(folder), "--config", "demo")
    assert r.returncode == 0, r.stderr
    assert f"{folder} is a folder: using {folder / 'last.pt'}" in r.stderr and "top-1" in r.stderr


def test_eval_of_a_folder_without_checkpoints_says_it_is_a_folder(tmp_path):
    run_folder = tmp_path / "run"
    _resnet8_checkpoint(run_folder / "stage_alpha" / "teacher" / "seed0" / "last.pt")
    r = run_cli("eval", str(run_folder), "--config", "demo")
    assert_one_line_error(r, f"{run_folder} is a folder without last.pt or best.pt; it holds 1 trainings, "
                             f"e.g. {run_folder / 'stage_alpha' / 'teacher' / 'seed0'}")


def test_a_checkpoint_that_pickles_code_is_refused_naming_the_blocked_global(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    for command in (["eval", str(evil), "--config", "demo"], ["export", str(evil), "-o", str(tmp_path / "x.pt")]):
        r = run_cli(*command)
        assert_one_line_error(r, f"{evil}: contains code or objects rolekd won't load (blocked global ", "system)")
        assert "weights_only" not in r.stderr and "pwned" not in r.stdout


def test_plot_of_a_json_that_is_not_a_schedule_says_so(tmp_path):
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps({"acc": 0.9}))
    r = run_cli("plot", str(other))
    assert_one_line_error(r, f"{other}: not a rolekd schedule (it has no \"format\" key")


def test_a_fractional_bit_width_names_the_allowed_range():
    r = run_cli("train", "demo", "--set", "student.w_bits=2.5")
    assert_one_line_error(r, "student.w_bits: expected a bit-width in 1..8 or 32 (full precision), got 2.5")


@pytest.mark.parametrize("mag", [10, 12, -1])
def test_augment_preview_mag_outside_the_schedule_range_names_the_option(tmp_path, mag):
    r = run_cli("augment-preview", "--op", "Rotate", "--mag", str(mag), "-n", "2", "-o", str(tmp_path / "p.png"))
    assert_one_line_error(r, f"--mag {mag}: expected a magnitude in 0..9")
    assert not (tmp_path / "p.png").exists()


def test_a_folder_dataset_with_an_empty_class_names_it(tmp_path):
    from PIL import Image

    for name, n in (("cat", 10), ("dog", 10), ("emu", 0)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    r = run_cli("train", "demo", "--set", "data.dataset=folder", "--set", f"data.root={tmp_path}")
    assert_one_line_error(r, f"{tmp_path / 'emu'}: class folder 'emu' holds no images")


def test_distill_resume_from_another_teacher_file_is_refused_naming_both(tmp_path):
    first, second = _resnet8_checkpoint(tmp_path / "a.pt"), tmp_path / "b.pt"
    from rolekd.quant import build_network
    from rolekd.training import save_checkpoint

    torch.manual_seed(1)
    save_checkpoint(second, {"model": build_network(RESNET8).state_dict(), "meta": RESNET8, "epoch": 1})
    out = tmp_path / "s"
    small = ["--set", "teacher.model_args.width=8", "--set", "student.model_args.width=8",
             "--set", "student.train.epochs=1", "--set", "distill.method=soft", "--out", str(out)]
    assert run_cli("distill", "demo", "--teacher", str(first), *small).returncode == 0
    assert run_cli("distill", "demo", "--teacher", str(first), *small, "--resume").returncode == 0
    r = run_cli("distill", "demo", "--teacher", str(second), *small, "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rolekd: error:")]
    assert f"distilled from the teacher {first}" in line and f"not from --teacher {second}" in line


def test_config_prints_every_key_with_its_value_default_and_meaning(capsys):
    from rolekd.config import SearchConfig

    meaning = SearchConfig.model_fields["quantile"].description
    assert main(["config", "demo"]) == 0
    out = capsys.readouterr().out
    assert f"  search.quantile = 0.5  (default 0.25)  {meaning}" in out.splitlines()  # the demo's 0.5
    assert "  student.train.optimizer = \"adam\"  (default \"adam\")" in out and "\nsearch: " in out
    assert main(["config", "--set", "search.quantile=0.3"]) == 0  # no NAME: the defaults
    out = capsys.readouterr().out
    assert out.startswith("# the defaults with search.quantile=0.3") and "search.quantile = 0.3  (default 0.25)" in out
    assert "name = \"experiment\"" in out


def test_config_of_an_unknown_name_is_one_line(capsys):
    assert main(["config", "dmeo"]) == 2
    assert capsys.readouterr().err.strip().startswith("rolekd: error: config 'dmeo' not found")
