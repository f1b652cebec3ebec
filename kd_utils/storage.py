"""Files that are whole or absent, checksums, and one writer per run folder.

Every file a run depends on (records, manifests, histories, models, saved
predictions) is written to a temporary file in the same folder and renamed
over its target (:func:`atomic_write`): a kill at any moment leaves either
the old file or the new one, never half of one. Leftover temporary files
start with ``.`` and contain ``.tmp-``; :func:`remove_temporaries` clears them.

:class:`RunLock` is a lock file (``lock.json``: pid, host, start time) that
lets one process at a time write a run folder, also across machines sharing
one folder (two Colab sessions on the same Google Drive).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

#: A lock held by a process on another machine is taken over when it has not
#: been refreshed for this long (training refreshes it after every epoch).
STALE_AFTER_SECONDS = 2 * 3600


def notice(message: str) -> None:
    """One line for the user about run state (damaged files, stale locks, old folders)."""
    print(f"note: {message}", file=sys.stdout, flush=True)


def _temporary(path: Path) -> Path:
    # Same folder (so the rename is atomic), same suffix (Keras insists on ".keras").
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` and rename the result over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return str(value)


def remove_temporaries(folder) -> None:
    """Delete temporary files a killed writer left in ``folder`` (not in sub-folders)."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path):
    """The JSON in ``path``, or None when it is missing, cut short or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunLockedError(RuntimeError):
    """Another live process writes this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` - this process is the only writer of ``run_dir``.

    A second process stops at once with :class:`RunLockedError` naming the
    owner. A lock left by a dead process is taken over: on the same host when
    its pid no longer runs, from another host when it was not refreshed
    (:meth:`refresh`) for ``stale_after`` seconds. The same process may enter
    again (a notebook rerunning a cell).
    """

    FILE = "lock.json"

    def __init__(self, run_dir, stale_after: float = STALE_AFTER_SECONDS):
        self.path = Path(run_dir) / self.FILE
        self.stale_after = stale_after
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}
        self._owned = False

    def _owner(self):
        return read_json(self.path)

    def _stale(self, owner) -> bool:
        if not isinstance(owner, dict) or "pid" not in owner:
            return True  # cut short by a kill while it was written
        if owner.get("host") == self.me["host"]:
            return not _alive(int(owner["pid"]))
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.stale_after

    def _mine(self, owner) -> bool:
        return isinstance(owner, dict) and owner.get("pid") == self.me["pid"] and owner.get("host") == self.me["host"]

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if self._mine(owner):
                    return self  # held by an outer ``with`` of this process, which releases it
                if not self._stale(owner):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
                    raise RunLockedError(
                        f"{self.path.parent} is being written by pid {owner['pid']} on host {owner.get('host')} "
                        f"(since {since}): let it finish, or stop it; if that process is gone, delete {self.path}."
                    ) from None
                notice(f"taking over the stale lock of {self.path.parent.name} "
                       f"(pid {owner.get('pid') if isinstance(owner, dict) else '?'} is gone)")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self.me, "since": time.time()}, f)
            self._owned = True
            return self
        raise RunLockedError(f"Could not take the lock {self.path}: another process keeps taking it.")

    def refresh(self) -> None:
        """Show other machines that the owner is alive (touch the lock file)."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def release(self) -> None:
        if self._owned and self._mine(self._owner()):
            self.path.unlink(missing_ok=True)
        self._owned = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
