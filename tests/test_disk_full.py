"""A full disk (issue 27 item 8): one line naming the file and the space it needed, the last good checkpoint kept,
and --resume continuing once space is freed."""

import errno
import io
import os
import subprocess
import sys

import pytest
import torch

from rolekd.atomic import DiskFullError, append_jsonl, atomic_write_text, human_bytes, read_jsonl
from rolekd.cli.main import main
from rolekd.training import fit, load_checkpoint, save_checkpoint

from test_train import make_trainer

REAL_SAVE = torch.save


def full_disk_save(epoch):
    """torch.save that, writing a real file for ``epoch``, gets ENOSPC partway — raised as torch does, a
    RuntimeError from the OSError (counting the size into a non-file still works)."""
    def save(obj, f, *args, **kwargs):
        if hasattr(f, "fileno") and obj.get("epoch") == epoch:
            f.write(b"PK\x03\x04 half a zip")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return REAL_SAVE(obj, f, *args, **kwargs)
    return save


def test_an_atomic_write_on_a_full_disk_names_the_file_and_its_size_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    monkeypatch.setattr(torch, "save", full_disk_save(2))
    with pytest.raises(DiskFullError) as exc:
        save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "epoch": 2})
    msg = str(exc.value)
    buffer = io.BytesIO()
    REAL_SAVE({"format": "rolekd.checkpoint", "version": 1, "model": {"w": torch.zeros(1000)}, "epoch": 2}, buffer)
    needs = human_bytes(len(buffer.getvalue()))
    assert msg.startswith(f"no space left on device to write {path}: needs {needs}, ") and "\n" not in msg, msg
    assert f"free in {tmp_path}" in msg
    assert exc.value.errno == errno.ENOSPC and isinstance(exc.value, OSError)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_a_jsonl_append_on_a_full_disk_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    real_fsync = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError, match=f"to write {path}: needs 13 B"):
        append_jsonl(path, {"epoch": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == '{"epoch": 1}\n'


def test_a_full_disk_mid_training_keeps_the_last_checkpoint_and_resume_equals_an_uninterrupted_run(
        tmp_path, monkeypatch):
    fit(make_trainer(), tmp_path / "a", meta={"model": "cnn"})
    monkeypatch.setattr(torch, "save", full_disk_save(3))
    with pytest.raises(DiskFullError) as exc:
        fit(make_trainer(), tmp_path / "b", meta={"model": "cnn"})
    last = tmp_path / "b" / "last.pt"
    msg = str(exc.value)
    assert msg.startswith("epoch 3: no space left on device to write ") and "\n" not in msg
    assert msg.endswith(f"; kept the last good checkpoint {last} (epoch 2)")
    assert load_checkpoint(last)["epoch"] == 2
    monkeypatch.undo()  # space freed
    fit(make_trainer(), tmp_path / "b", meta={"model": "cnn"}, resume=True)
    a, b = make_trainer(), make_trainer()
    a.load_state_dict(load_checkpoint(tmp_path / "a" / "last.pt"))
    b.load_state_dict(load_checkpoint(last))
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k
    drop = ("time_s", "epoch_time_s", "images_per_s")
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(d / "metrics.jsonl")]
            for d in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1] and len(rows[0]) == 4
    assert load_checkpoint(tmp_path / "b" / "best.pt")["epoch"] == load_checkpoint(last)["best_epoch"]


def test_the_cli_says_a_full_disk_in_one_line_with_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("rolekd.pipeline.commands.train", lambda *a, **k: atomic_write_text(tmp_path / "x", "x"))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    assert main(["train", "demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rolekd: error: no space left on device to write {tmp_path / 'x'}: needs 1 B, ")
    assert err.endswith("; free space there and rerun with --resume to continue") and "\n" not in err


def _mount_tmpfs(folder, size):
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")


@pytest.mark.slow
def test_rolekd_train_on_a_really_full_disk_then_resume_after_freeing_space(tmp_path):
    """A real 400 kB file system: epoch 1's checkpoints fit, epoch 2's last.pt does not."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "400k")
    try:
        out = disk / "run"
        args = ["train", "demo", "--set", "teacher.model=cnn", "--set", "teacher.model_args={}",
                "--set", "teacher.train.epochs=3", "--out", str(out)]
        cli = [sys.executable, "-m", "rolekd.cli.main"]
        r = subprocess.run(cli + args, capture_output=True, text=True, timeout=600)
        errors = [line for line in r.stderr.splitlines() if not line.startswith(("training the", "teacher: epoch"))]
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr
        err = errors[0]
        assert err.startswith("rolekd: error: epoch 2: no space left on device to write ") and " kB free in " in err
        assert f"kept the last good checkpoint {out / 'last.pt'} (epoch 1)" in err
        assert err.endswith("rerun with --resume to continue")
        assert load_checkpoint(out / "last.pt")["epoch"] == 1 and not list(out.glob(".*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)  # space freed
        r = subprocess.run(cli + args + ["--resume"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert [row["epoch"] for row in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
        assert load_checkpoint(out / "last.pt")["epoch"] == 3
        full = tmp_path / "full"
        assert subprocess.run(cli + args[:-1] + [str(full)], capture_output=True, timeout=600).returncode == 0
        same = [[{k: v for k, v in row.items() if "time" not in k and "per_s" not in k}
                 for row in read_jsonl(d / "metrics.jsonl")] for d in (out, full)]
        assert same[0] == same[1]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
