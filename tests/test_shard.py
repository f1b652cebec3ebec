"""Sessions sharing one artifacts folder split a sweep's runs (KD_SHARD=i/n)."""

import time
import types

import keras
import pytest

from kd_utils import config, models
from kd_utils.experiments import choices, memory, pipeline, shard


def test_shards_partition_a_list_of_runs_the_same_way_every_time():
    keys = [f"run{i:02d}" for i in range(11)]
    for count in (1, 2, 3, 4):
        shares = [[k for k, mine in zip(keys, shard.Shard(i, count).owns(keys)) if mine] for i in range(count)]
        assert sorted(k for share in shares for k in share) == sorted(keys)  # every run in exactly one shard
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
        assert shard.assign(keys, count) == shard.assign(list(keys), count)  # stable across calls
    # Which shard gets the odd run depends on the list, so the extra work moves from list to list.
    firsts = {shard.assign([f"{name}-a", f"{name}-b", f"{name}-c"], 2)[0] for name in "pqrstuvwxyz"}
    assert firsts == {0, 1}


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3", "", "0.5/2"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match="expected i/n"):
        shard.parse(text)


def test_the_environment_names_the_shard_and_the_wait(monkeypatch):
    assert shard.from_env() is None
    monkeypatch.setenv("KD_SHARD", " 1/3 ")
    assert shard.from_env() == shard.Shard(1, 3) and str(shard.from_env()) == "1/3"
    monkeypatch.setenv("KD_SHARD", "3/3")
    with pytest.raises(ValueError, match="KD_SHARD='3/3'"):
        shard.from_env()
    assert shard.wait_seconds() == shard.DEFAULT_WAIT_S
    monkeypatch.setenv("KD_SHARD_WAIT", "0")
    assert shard.wait_seconds() == 0
    for bad in ("-5", "soon", "nan"):
        monkeypatch.setenv("KD_SHARD_WAIT", bad)
        with pytest.raises(ValueError, match="KD_SHARD_WAIT"):
            shard.wait_seconds()


@pytest.fixture
def sweep_setup(tiny_manifest, monkeypatch):
    """A 2 x 2 sweep (two temperatures, two seeds) of 1-epoch DSNets at 32 px; ``trained`` lists the runs trained."""
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1, 2), student_epochs=1)
    keras.utils.set_random_seed(0)
    teacher = models.build_dsnet(32)
    trained = []
    fit = memory.fit_within_memory

    def counting(build, batch_size, epochs, run_dir, **kwargs):
        trained.append(run_dir.name)
        return fit(build, batch_size, epochs, run_dir, **kwargs)

    monkeypatch.setattr(memory, "fit_within_memory", counting)
    monkeypatch.setenv("KD_SHARD_WAIT", "0")

    def sweep(shard_spec=None):
        if shard_spec:
            monkeypatch.setenv("KD_SHARD", shard_spec)
        else:
            monkeypatch.delenv("KD_SHARD", raising=False)
        return choices.sweep(profile, tiny_manifest, teacher, temperatures=(2.0, 4.0))

    def owner(temperature, seed):
        keys = [pipeline.student_of_profile(profile, tiny_manifest, teacher=teacher, temperature=temperature,
                                             seed=s)[0] for s in profile.seeds]
        return shard.assign(keys, 2)[profile.seeds.index(seed)]

    return types.SimpleNamespace(sweep=sweep, owner=owner, trained=trained, profile=profile, manifest=tiny_manifest,
                                 teacher=teacher)


def test_each_shard_trains_only_its_share_and_loads_the_others(sweep_setup):
    s = sweep_setup
    name = {(t, seed): f"dsnet_T{t:g}_a0.1_b32_s{seed}" for t in (2.0, 4.0) for seed in (1, 2)}
    share = {i: [name[run] for run in name if s.owner(*run) == i] for i in (0, 1)}
    # Shard 1 trains its run at T=2 and stops: shard 0's run there is not finished and it does not wait.
    with pytest.raises(shard.ShardPending, match="1 run\\(s\\) left to other shards"):
        s.sweep("1/2")
    assert [n.split("-")[0] for n in s.trained] == share[1][:1]
    # Shard 0 trains its share at T=2, loads shard 1's run there, goes on to T=4.
    s.trained.clear()
    with pytest.raises(shard.ShardPending):
        s.sweep("0/2")
    assert [n.split("-")[0] for n in s.trained] == share[0]
    # Shard 1 again: trains its run at T=4 only; the other three are loaded.
    s.trained.clear()
    records = s.sweep("1/2")
    assert [n.split("-")[0] for n in s.trained] == share[1][1:]
    assert {t: [r["config"]["seed"] for r in runs] for t, runs in records.items()} == {2.0: [1, 2], 4.0: [1, 2]}
    # Without a shard everything is there: it trains nothing and returns the same runs.
    s.trained.clear()
    assembled = s.sweep()
    assert s.trained == []
    assert [r["key"] for runs in assembled.values() for r in runs] == [r["key"] for runs in records.values() for r in runs]


def test_a_shard_waits_for_the_other_shards_runs(sweep_setup, monkeypatch, capsys):
    """Shard 1 trains its share and waits; meanwhile (here: in its sleep) shard 0 finishes each
    of its runs, which shard 1 then loads: the sweep returns every run, each trained once."""
    s = sweep_setup
    monkeypatch.setenv("KD_SHARD_WAIT", "3600")
    others = [(t, seed) for t in (2.0, 4.0) for seed in (1, 2) if s.owner(t, seed) == 0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        temperature, seed = others.pop(0)  # the other session finishes one more run
        pipeline.distill_student(s.profile, s.manifest, s.teacher, temperature=temperature, seed=seed, verbose=0)

    monkeypatch.setattr(shard, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                              monotonic=time.monotonic, sleep=sleep))
    records = s.sweep("1/2")
    assert others == [] and sleeps == [30.0, 30.0]  # one wait per temperature
    assert {t: [r["config"]["seed"] for r in runs] for t, runs in records.items()} == {2.0: [1, 2], 4.0: [1, 2]}
    assert len(s.trained) == len(set(s.trained)) == 4
    assert "shard 1/2: waiting up to 1.0 h for 1 run(s) of other shards" in capsys.readouterr().out
