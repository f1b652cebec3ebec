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
import uuid
from pathlib import Path

#: A lock held by a process on another machine is taken over when it has not
#: been refreshed for this long (training refreshes it after every epoch).
STALE_AFTER_SECONDS = 2 * 3600

#: A lock file that cannot be read (not written by :class:`RunLock`, which links complete
#: files) counts as stale only when older than this.
UNREADABLE_GRACE_SECONDS = 30


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
    """Another live process writes this run folder (or took it over from this one)."""


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

    The lock file (``lock.json``: pid, host, start time and a random token)
    is written whole to a temporary file and hard-linked into place, which
    fails when a lock is there: two processes can never both create it, and
    nobody ever sees it half written. A second process stops at once with
    :class:`RunLockedError` naming the owner. A lock left by a dead process
    is taken over: on the same host when its pid no longer runs, from another
    host when it was not refreshed (:meth:`refresh`) for ``stale_after``
    seconds; a lock that cannot be read counts as stale only when it is older
    than ``grace`` seconds (where a file system has no hard links the lock is
    created exclusively and then written, so it is briefly empty). To take
    over, a process creates a marker named after the stale lock's content
    (``.lock.stale-<hash>``, exclusively: exactly one process can), checks
    that the lock is still that one, removes it and links its own, which can
    still lose to a process that found the folder free.
    The owner calls :meth:`check` after every epoch: when the lock no longer
    names it (deleted or taken over), it stops with :class:`RunLockedError`
    before writing anything. The same process may enter again (a notebook
    rerunning a cell).
    """

    FILE = "lock.json"

    def __init__(self, run_dir, stale_after: float = STALE_AFTER_SECONDS, grace: float = UNREADABLE_GRACE_SECONDS):
        self.path = Path(run_dir) / self.FILE
        self.stale_after = stale_after
        self.grace = grace
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}
        self._token = None
        self._owned = False

    def _read(self) -> tuple[bytes | None, dict | None]:
        """The lock's bytes and its JSON (None when absent; JSON None when unreadable)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError:
            return b"", None
        try:
            owner = json.loads(raw)
        except ValueError:
            owner = None
        return raw, owner if isinstance(owner, dict) and "pid" in owner else None

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def _stale(self, owner) -> bool:
        if owner is None:  # unreadable: not written by this class (we link complete files); give it time
            return self._age() > self.grace
        if owner.get("host") == self.me["host"]:
            try:
                return not _alive(int(owner["pid"]))
            except (TypeError, ValueError):
                return self._age() > self.grace
        return self._age() > self.stale_after

    def _mine(self, owner) -> bool:
        return (isinstance(owner, dict) and owner.get("pid") == self.me["pid"]
                and owner.get("host") == self.me["host"]
                and (self._token is None or owner.get("token") == self._token))

    def _link_mine(self) -> bool:
        """Create the lock, complete, where none is; False when one is there."""
        token = uuid.uuid4().hex
        content = json.dumps({**self.me, "since": time.time(), "token": token})
        tmp = self.path.with_name(f".lock.tmp-{os.getpid()}-{token[:8]}")
        tmp.write_text(content)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create it exclusively, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:  # unreadable meanwhile: others wait for `grace` seconds
                f.write(content)
        finally:
            tmp.unlink(missing_ok=True)
        self._token = token
        return True

    def _take_over(self, raw: bytes) -> bool:
        """Remove the stale lock whose bytes are ``raw`` if this process wins the right to (True)."""
        marker = self.path.with_name(f".lock.stale-{hashlib.sha256(raw).hexdigest()[:16]}")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # exactly one process creates it
        except FileExistsError:
            with contextlib.suppress(OSError):  # left by a process killed while taking over
                if time.time() - marker.stat().st_mtime > self.grace:
                    marker.unlink()
            return False
        try:
            if self._read()[0] != raw:  # released or taken over meanwhile: not the stale lock any more
                return False
            self.path.unlink(missing_ok=True)  # only the marker's creator removes this lock
            return True
        finally:
            marker.unlink(missing_ok=True)

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._link_mine():
                self._owned = True
                return self
            raw, owner = self._read()
            if raw is None:
                continue  # released meanwhile: try again
            if owner is not None and owner.get("pid") == self.me["pid"] and owner.get("host") == self.me["host"]:
                self._token = owner.get("token")  # an outer ``with`` of this process holds it and releases it
                return self
            if not self._stale(owner):
                if owner is None:
                    raise RunLockedError(f"{self.path} cannot be read and is younger than {self.grace:.0f} s: "
                                         "another process may be writing the run; try again, or delete it.")
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
                raise RunLockedError(
                    f"{self.path.parent} is being written by pid {owner['pid']} on host {owner.get('host')} "
                    f"(since {since}): let it finish, or stop it; if that process is gone, delete {self.path}."
                )
            if self._take_over(raw):
                notice(f"taking over the stale lock of {self.path.parent.name} "
                       f"({'pid ' + str(owner.get('pid')) + ' is gone' if owner else 'it could not be read'})")
            else:
                time.sleep(0.01)  # another process is taking it over: look again
        raise RunLockedError(f"Could not take the lock {self.path} within 10 s: other processes keep taking it.")

    def check(self) -> None:
        """Stop (:class:`RunLockedError`) when the lock no longer names this process."""
        raw, owner = self._read()
        if not self._mine(owner):
            who = (f"pid {owner['pid']} on host {owner.get('host')}" if owner
                   else "nobody (it was deleted)" if raw is None else "nobody (its content is unreadable)")
            raise RunLockedError(f"{self.path} now names {who}, not this process: it stopped writing "
                                 f"{self.path.parent.name} so that only one process does.")

    def refresh(self) -> None:
        """Show other machines that the owner is alive (touch the lock file): after :meth:`check`."""
        self.check()
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def release(self) -> None:
        if self._owned and self._mine(self._read()[1]):
            self.path.unlink(missing_ok=True)
        self._owned = False
        self._token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
