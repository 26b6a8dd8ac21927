"""One live process per output folder (issue 27 item 9): a second `rolekd train/distill/search/run` on a folder in
use is refused in one line naming the process; a killed holder leaves nothing stuck."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from rolekd.atomic import read_jsonl
from rolekd.cli.main import main
from rolekd.config import load_config
from rolekd.pipeline.folders import LOCK_FILE, OutputFolderError, claim_folder, lock_folder, releases_claims

HOLD = """
import sys, time
sys.argv = ["rolekd", "train", "demo", "--out", sys.argv[1]]
from rolekd.pipeline.folders import lock_folder
lock_folder(sys.argv[-1])
print("held", flush=True)
time.sleep(600)
"""


def hold(folder):
    """A child process that claims ``folder`` as `rolekd train demo --out folder` would, and keeps it."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held") / "run"
    child = hold(folder)
    yield folder, child.pid
    kill(child)


@pytest.mark.parametrize("command", [
    ["train", "demo"], ["train", "demo", "--resume"], ["distill", "demo", "--teacher", "t.pt"],
    ["search", "demo", "--role", "teacher"], ["search", "demo", "--role", "teacher", "--resume"], ["run", "demo"],
    ["run", "demo", "--resume"],
])
def test_a_second_process_is_refused_in_one_line_naming_the_holder(held, command, capsys):
    folder, pid = held
    assert main([*command, "--out", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # `run` says what it runs first
    err = lines[-1]
    assert not any(line.startswith("rolekd: error") or "Traceback" in line for line in lines[:-1]), lines
    assert err.startswith(f"rolekd: error: {folder} is in use by process {pid} on {socket.gethostname()} "
                          f"(rolekd train demo --out {folder}, since "), err
    assert err.endswith("; wait for it to finish (or stop it) or choose another --out")
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]  # refused before writing anything


def test_a_lock_left_by_a_kill_9_does_not_block_resume(tmp_path):
    folder = tmp_path / "run"
    child = hold(folder)
    with pytest.raises(OutputFolderError, match=f"in use by process {child.pid} "):
        lock_folder(folder)
    kill(child)
    claim_folder(load_config("demo"), folder, True, "last.pt")  # the kernel dropped the dead process's flock
    assert read_jsonl(folder / LOCK_FILE)[0]["pid"] == os.getpid()


def test_only_the_claimed_folder_is_locked_and_a_command_releases_it(held, tmp_path):
    folder, _ = held
    lock_folder(folder / "stage_alpha" / "teacher" / "seed0")  # a Ray worker's training inside the run

    @releases_claims
    def command(out):
        lock_folder(out)
        lock_folder(out)  # the same process may claim its folder again
        return out

    command(tmp_path / "done")
    kill(hold(tmp_path / "done"))  # another process may take a folder once the command that claimed it returned


@pytest.mark.slow
def test_a_training_in_flight_refuses_a_resume_and_its_kill_9_does_not(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["train", "demo", "--set", "teacher.model=cnn", "--set", "teacher.model_args={}",
            "--set", "teacher.train.epochs=3", "--set", "teacher.train.lr=0.02", "--out", str(out)]
    child = subprocess.Popen([sys.executable, "-m", "rolekd.cli.main", *args], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not read_jsonl(out / "metrics.jsonl") and time.time() < deadline:
            time.sleep(0.2)
        assert main(args + ["--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"is in use by process {child.pid} " in err and f"rolekd train demo --set" in err, err
    finally:
        kill(child)
    assert main(args + ["--resume"]) == 0
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
