"""Runs shared out between sessions: shard ``i`` of ``n`` trains its share of each sweep.

Several Colab sessions (or GPUs) that share one artifacts folder (Drive)
split the runs of :func:`kd_utils.experiments.pipeline.repeat` and
:func:`~kd_utils.experiments.choices.sweep` with ``KD_SHARD=i/n`` (``python -m kd_utils
reproduce --shard i/n`` sets it for the notebooks). Runs are independent and
skip-if-done, so each session trains the runs of the list that fall to it
(:func:`assign`), loads the ones already finished by anyone, and then waits
for the others' records to appear (``KD_SHARD_WAIT`` seconds, default 12
hours; 0: do not wait) before the sweep returns: the later steps (choices on
validation, tables) always see every run, in every shard. A shard whose
wait runs out stops with :class:`ShardPending`, saying how many runs are left.

Nothing here imports TensorFlow: the command line checks its arguments first.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

ENV = "KD_SHARD"
WAIT_ENV = "KD_SHARD_WAIT"
DEFAULT_WAIT_S = 12 * 3600


class ShardPending(RuntimeError):
    """Runs of another shard are not finished (the wait for them ran out)."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, keys) -> list[bool]:
        """Which of these runs (by key, in the sweep's order) this shard trains."""
        return [shard == self.index for shard in assign(keys, self.count)]


def parse(text: str) -> Shard:
    """``"i/n"`` with ``0 <= i < n``; ValueError (one line, for the user) otherwise."""
    parts = str(text).strip().split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected i/n with whole numbers, e.g. 0/2 (shard 0 of 2), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"expected i/n with 0 <= i < n, e.g. 0/2 or 1/2, got {text!r}")
    return Shard(index, count)


def from_env() -> Shard | None:
    """The shard ``KD_SHARD`` names, else None (every run is this session's)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        return parse(value)
    except ValueError as err:
        raise ValueError(f"{ENV}={value!r}: {err}") from None


def wait_seconds() -> float:
    """How long a shard waits for the other shards' runs (``KD_SHARD_WAIT``)."""
    value = os.environ.get(WAIT_ENV, "").strip()
    if not value:
        return float(DEFAULT_WAIT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{WAIT_ENV}={value!r}: expected seconds >= 0 (0: do not wait for other shards)")
    return seconds


def assign(keys, count: int) -> list[int]:
    """The shard of each run of a list: round robin over the list's order,
    started at an offset derived from the keys, so shares differ by at most
    one run, which shard gets the extra run varies from list to list, and the
    assignment is the same in every session that builds the same list."""
    keys = [str(k) for k in keys]
    offset = int(hashlib.sha256("\n".join(keys).encode()).hexdigest()[:8], 16)
    return [(position + offset) % int(count) for position in range(len(keys))]


def wait_for(sharded, pending: dict, load, finished, poll_s: float = 30.0) -> None:
    """Call ``load(seed)`` for each pending run (``{seed: (key, folder)}``) once
    ``finished(key, folder)`` says another shard has finished it;
    :class:`ShardPending` when ``KD_SHARD_WAIT`` runs out."""
    if not pending:
        return
    wait = wait_seconds()
    start = last_note = time.monotonic()
    print(f"shard {sharded}: waiting up to {wait / 3600:.1f} h for {len(pending)} run(s) of other shards "
          f"({', '.join(folder.name for _, folder in pending.values())}).", flush=True)
    while True:
        for seed, (key, folder) in list(pending.items()):
            if finished(key, folder):
                load(seed)
                del pending[seed]
        if not pending:
            return
        waited = time.monotonic() - start
        if waited >= wait:
            raise ShardPending(
                f"{len(pending)} run(s) left to other shards after waiting {waited / 60:.0f} min "
                f"({', '.join(folder.name for _, folder in pending.values())}): run again once they are done "
                f"(KD_SHARD_WAIT sets the wait), or without --shard / KD_SHARD to train them here and "
                "assemble the tables.")
        if time.monotonic() - last_note >= 600:
            last_note = time.monotonic()
            print(f"shard {sharded}: still waiting for {len(pending)} run(s) ({waited / 60:.0f} min).", flush=True)
        time.sleep(min(poll_s, max(wait - waited, 0.0)))
