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


def test_a_damaged_lock_file_is_taken_over_after_the_grace_period_and_the_same_process_may_reenter(tmp_path):
    (tmp_path / "lock.json").write_text('{"pid": ')
    with pytest.raises(storage.RunLockedError, match="cannot be read"):  # maybe being written right now
        storage.RunLock(tmp_path).acquire()
    old = time.time() - storage.UNREADABLE_GRACE_SECONDS - 5
    os.utime(tmp_path / "lock.json", (old, old))
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


RACER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from kd_utils import storage
folders, t0, slot = json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
results = []
for i, folder in enumerate(folders):
    start = t0 + i * slot
    time.sleep(max(0.0, start - time.time()))
    if time.time() > start + 0.3 * slot:  # too late to race the others: the owner may be gone
        results.append("late")
        continue
    lock = storage.RunLock(folder)
    try:
        lock.acquire()
    except storage.RunLockedError:
        results.append("refused")
        continue
    results.append("owner")
    time.sleep(max(0.0, start + 0.8 * slot - time.time()))  # hold it while the others try
    lock.check()
    lock.release()
print(json.dumps(results))
"""


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale lock"])
def test_racing_processes_find_exactly_one_owner_every_time(tmp_path, stale):
    """Five processes try to take one run folder at the same moment, 25 times
    (on an empty folder, or one holding a dead process's lock): every time
    exactly one owns it and the others are refused."""
    trials, racers, slot = 25, 5, 0.4
    folders = [tmp_path / f"run-{i}" for i in range(trials)]
    if stale:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        for folder in folders:
            write_lock(folder, dead.pid)
    t0 = time.time() + 2.0  # every racer started and imported by then
    procs = [subprocess.Popen([sys.executable, "-c", RACER, os.getcwd(), json.dumps([str(f) for f in folders]),
                               str(t0), str(slot)], stdout=subprocess.PIPE, text=True) for _ in range(racers)]
    outcomes = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    raced = 0
    for trial in range(trials):
        seen = [outcome[trial] for outcome in outcomes]
        tried = [s for s in seen if s != "late"]
        if tried:
            assert tried.count("owner") == 1, f"trial {trial}: {seen}"
        raced += len(tried) >= 2
    assert raced >= trials // 2  # they did race: most trials had several contenders at once
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == []  # released, no marker or temporary left


def test_the_owner_stops_when_its_lock_is_deleted_or_taken(tmp_path, other_process):
    lock = storage.RunLock(tmp_path).acquire()
    lock.refresh()  # still its own
    (tmp_path / "lock.json").unlink()
    with pytest.raises(storage.RunLockedError, match="deleted"):
        lock.refresh()
    (tmp_path / "lock.json").write_text("{not json")
    with pytest.raises(storage.RunLockedError, match="nobody \\(its content is unreadable\\)"):
        lock.check()
    write_lock(tmp_path, other_process)
    with pytest.raises(storage.RunLockedError, match=f"pid {other_process}"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / "lock.json").read_text())["pid"] == other_process  # not its to delete
