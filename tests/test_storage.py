"""One writer per run folder: the lock file and what happens to a second process."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from kd_utils import storage


@pytest.fixture
def other_process():
    """A live process that is not this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def write_lock(run_dir, pid, host=None, age=0.0):
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "lock.json"
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_second_live_writer_is_stopped_with_its_pid_and_host(tmp_path, other_process):
    write_lock(tmp_path, other_process)
    with pytest.raises(storage.RunLockedError) as err:
        storage.RunLock(tmp_path).acquire()
    message = str(err.value)
    assert f"pid {other_process}" in message and socket.gethostname() in message and "delete" in message
    assert json.loads((tmp_path / "lock.json").read_text())["pid"] == other_process  # untouched


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, dead.pid)
    with storage.RunLock(tmp_path):
        assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().out
    assert not (tmp_path / "lock.json").exists()  # released


def test_another_hosts_lock_counts_until_it_goes_stale(tmp_path):
    write_lock(tmp_path, 1, host="colab-vm-elsewhere", age=60)
    with pytest.raises(storage.RunLockedError, match="colab-vm-elsewhere"):
        storage.RunLock(tmp_path).acquire()
    write_lock(tmp_path, 1, host="colab-vm-elsewhere", age=storage.STALE_AFTER_SECONDS + 60)
    with storage.RunLock(tmp_path):
        pass


def test_a_damaged_lock_file_is_taken_over_and_the_same_process_may_reenter(tmp_path):
    (tmp_path / "lock.json").write_text('{"pid": ')
    with storage.RunLock(tmp_path):
        with storage.RunLock(tmp_path):  # a notebook cell run again in the same kernel
            pass
        assert (tmp_path / "lock.json").exists()  # the inner exit does not release the outer lock
    assert not (tmp_path / "lock.json").exists()


def test_two_processes_cannot_write_one_run(tmp_path):
    """A real second process holds the lock; this one is refused until it ends."""
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib; sys.path.insert(0, sys.argv[1]);"
        "from kd_utils import storage\n"
        "with storage.RunLock(sys.argv[2]):\n"
        "    pathlib.Path(sys.argv[3]).touch(); time.sleep(30)"
    ), os.getcwd(), str(tmp_path / "run"), str(ready)])
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        with pytest.raises(storage.RunLockedError, match=f"pid {holder.pid}"):
            storage.RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    with storage.RunLock(tmp_path / "run"):  # killed: its lock is stale now
        pass
