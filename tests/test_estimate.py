"""The planned runs of a profile and the estimate of their hours (kd_utils.tools.estimate, CLI ``estimate``)."""

import json

import pytest

from kd_utils import config, models, paths
from kd_utils.tools import estimate, steptime
from kd_utils.__main__ import main

from cli_child import run_cli_cases

NOTEBOOKS = ["02", "03", "04", "05", "06", "07"]


def hand_count(p: config.Profile) -> int:
    """The runs notebooks 02-07 train for ``p``, counted by hand from its fields
    (T and alpha chosen on validation assumed to be the profile's own)."""
    s = len(p.seeds)
    return (1  # 02: the teacher, once
            + (p.teacher_pretrain_per_class > 0)  # 02: its pretraining, once
            + 2 * s  # 03: DSNet at the profile's T and alpha; without teacher
            + 2 * min(2, s) * (p.converged_epochs > 0)  # 03: the same two for the convergence check, two seeds
            + (len(p.temperatures) - (p.temperature in p.temperatures)) * s  # 04: eq. (5) sweep, less 03's T
            + (len(p.temperatures) - (1 in p.temperatures)) * s  # 04: the T^2 sweep (at T = 1 the same runs)
            + (len(p.alphas) - (p.alpha in p.alphas)) * s  # 04: alphas at the chosen T, less the one done
            + 2 * len(p.students) * s  # 05: each large student with and without teacher
            + (len(p.batch_sizes) - (p.batch_size in p.batch_sizes)) * s  # 06: batch sizes, less the one done
            + 4 * s * (p.robust_teacher and p.robust_students)  # 06: DSNet without the views, 4 teachers or none
            + s  # 07: the KL ablation (eq. (5) and T^2 at the chosen T and alpha ran in 04)
            + 2 * s)  # 07: uniform and shuffled teacher


def test_smoke_plan_matches_the_hand_count():
    smoke = config.get_profile("smoke")
    runs = estimate.planned_runs(smoke)
    assert len(runs) == hand_count(smoke) == 33
    assert len({r.key for r in runs}) == len(runs)
    assert [r.notebook for r in runs] == sorted(r.notebook for r in runs)  # in the notebooks' order
    teacher = [r for r in runs if r.model == estimate.TEACHER]
    assert len(teacher) == 1 and teacher[0].epochs == smoke.teacher_epochs and teacher[0].seed == smoke.seed
    assert {r.epochs for r in runs if r.model == "DSNet"} == {smoke.student_epochs, smoke.converged_epochs}
    check = [r for r in runs if "convergence check" in r.what]
    assert len(check) == 4 and {r.epochs for r in check} == {smoke.converged_epochs}
    assert {r.seed for r in check} == set(smoke.seeds[:2])
    assert {r.model for r in runs if r.notebook == "05"} == set(smoke.students)
    assert {r.batch_size for r in runs if r.model == "DSNet"} == set(smoke.batch_sizes) | {smoke.batch_size}
    assert {r.image_size for r in runs} == {smoke.image_size}


def test_the_paper_plan_and_what_changes_it():
    paper = config.get_profile("paper")
    assert len(estimate.planned_runs(paper)) == hand_count(paper) == 121
    smoke = config.get_profile("smoke")
    more_seeds = smoke.replace(seeds=(10, 11, 12))
    assert len(estimate.planned_runs(more_seeds)) == hand_count(more_seeds) == 1 + 28 // 2 * 3 + 4
    assert len(estimate.planned_runs(smoke.replace(converged_epochs=0))) == 29  # no convergence check
    # one more temperature: one more run per seed with eq. (5) and one with T^2
    more_t = smoke.replace(temperatures=(3, 10, 20))
    assert len(estimate.planned_runs(more_t)) == 33 + 2 * 2
    # a temperature sweep without the profile's T: notebook 03's runs are no longer in it
    assert len(estimate.planned_runs(smoke.replace(temperatures=(3, 20)))) == 33 + 2
    fewer_students = smoke.replace(students=("EfficientNetB0",))
    assert len(estimate.planned_runs(fewer_students)) == 33 - 2 * 2


def test_a_robust_profile_plans_notebook_06s_dsnets_trained_without_the_views():
    for plain, robust in (("kaggle-cpu", "kaggle-cpu-robust"), ("colab", "colab-robust")):
        before, after = config.get_profile(plain), config.get_profile(robust)
        assert len(estimate.planned_runs(after)) == hand_count(after) == hand_count(before) + 4 * len(after.seeds)
        rows = {r["what"]: r for r in estimate.plan_table(after)}
        extra = rows["DSNet trained without the views: distilled, uniform and shuffled teacher, no teacher"]
        assert extra["new"] == extra["asked"] == 4 * len(after.seeds)
        assert {dict(r.settings).get("teacher_control") for r in extra["runs"]} == {None, "uniform", "shuffled"}
        assert all(dict(r.settings)["robust"] is False for r in extra["runs"])
        assert not any("without the views" in r["what"] for r in estimate.plan_table(before))


def test_another_choice_on_validation_changes_which_runs_coincide():
    smoke = config.get_profile("smoke")
    rows = {r["what"]: r for r in estimate.plan_table(smoke, {"temperature": 3, "alpha": 0.5})}
    # at alpha 0.5 the T^2 ablation is not one of notebook 04's T^2 runs (those are at alpha 0.1)
    assert rows["ablation: eq. (5), T^2, KL at the chosen T and alpha"]["new"] == 2 * 2
    assert sum(r["new"] for r in rows.values()) == 35
    assert all(r["asked"] >= r["new"] for r in rows.values())


def test_split_sizes_from_the_profile_and_from_a_saved_manifest():
    sizes, where = estimate.split_sizes(config.get_profile("paper"))
    assert sizes["train"] == 5596 and sizes["train"] + sizes["val"] == 6996  # the paper: 5,596 / 1,400 and "no saved manifest" in where
    smoke = config.get_profile("smoke")
    sizes, _ = estimate.split_sizes(smoke)
    assert sizes == {"train": 67, "val": 17, "test": 36}  # what notebook 01 makes of 2 x 60 images
    sizes, _ = estimate.split_sizes(config.get_profile("cpu"))
    assert sizes == {"train": 336, "val": 144, "test": 720}  # 2 x 600 images, 60% test, 30% of the rest validation
    folder = paths.artifacts_dir(smoke) / "data"
    folder.mkdir(parents=True)
    counts = {s: {"benign": n // 2, "malignant": n - n // 2, "total": n} for s, n in
              (("train", 50), ("val", 12), ("test", 20))}
    (folder / "manifest.json").write_text(json.dumps({"counts": counts}))
    sizes, where = estimate.split_sizes(smoke)
    assert sizes == {"train": 50, "val": 12, "test": 20} and "saved manifest" in where


def test_estimate_on_the_smoke_profile_gives_every_notebook_positive_hours():
    profile = config.get_profile("smoke", image_size=32)
    # DSNet alone (timing the other three models would add a minute on a CPU; which models
    # are timed by default is the next test's)
    result = estimate.estimate(profile, steps=1, time_all=False)
    assert list(result["notebooks"]) == NOTEBOOKS
    assert all(row["hours"] > 0 and row["runs"] > 0 for row in result["notebooks"].values())
    assert result["runs"] == 33 and result["hours"] == pytest.approx(sum(r["hours"] for r in result["notebooks"].values()))
    assert result["models"]["DSNet"]["timed"] and result["models"]["DSNet"]["step_s"] > 0
    text = estimate.report(result, estimate.plan_table(profile))
    for book in NOTEBOOKS:
        assert f"| {book}" in text
    assert "**total** | **33**" in text and result["device"] in text and "from 1 timed training step" in text


def fake_timer(monkeypatch, gpu: bool) -> list:
    """A GPU or none, and a step timer that takes 0.5 s a step and notes each
    ``(model, image size, batch)`` it was asked to time."""
    import tensorflow as tf

    timed = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["a GPU"] if gpu else [])
    monkeypatch.setattr(steptime, "time_step", lambda name, size, batch, precision, steps, warmup, jit_compile=False:
                        timed.append((name, size, batch)) or {"step_s": 0.5})
    return timed


@pytest.mark.parametrize("gpu", [False, True])
def test_a_cpu_times_a_small_batch_and_scales_it_per_image_a_gpu_the_profiles_batch(monkeypatch, gpu):
    timed = fake_timer(monkeypatch, gpu)
    profile = config.get_profile("smoke", image_size=32, batch_size=64)
    result = estimate.estimate(profile, steps=1)
    batch = 64 if gpu else estimate.CPU_TIMING_BATCH
    assert ("DSNet", 32, batch) in timed and {b for *_, b in timed} == {batch}
    assert result["models"]["DSNet"]["step_s"] == pytest.approx(0.5 * 64 / batch)
    assert ("scaled per image to the profile's batch of 64" in result["method"]) is not gpu
    # a profile whose batch is smaller than the CPU's timing batch is timed at its own
    timed.clear()
    estimate.estimate(profile.replace(batch_size=4), steps=1)
    assert {b for *_, b in timed} == {4}


@pytest.mark.parametrize("gpu", [False, True])
def test_which_models_are_timed_depends_on_the_device_and_the_largest_input(monkeypatch, gpu):
    timed = fake_timer(monkeypatch, gpu)
    everyone = {estimate.TEACHER, "DSNet", "MobileNet", "EfficientNetB0"}
    # Small inputs (a teacher at its own, larger size included): every model, each at its own size.
    small = config.get_profile("smoke", image_size=32, teacher_image_size=64)
    result = estimate.estimate(small, steps=1)
    assert {n for n, *_ in timed} == everyone
    assert {(n, size) for n, size, _ in timed} >= {(estimate.TEACHER, 64), ("DSNet", 32)}
    assert all(m["timed"] for m in result["models"].values()) and "not timed" not in result["method"]
    assert "the teacher at 64 px, the students at 32 px" in result["method"]
    # Above CPU_TIME_ALL_UP_TO a CPU times DSNet alone and scales the others by FLOPs.
    timed.clear()
    large = config.get_profile("smoke", image_size=estimate.CPU_TIME_ALL_UP_TO + 32)
    result = estimate.estimate(large, steps=1)
    assert {n for n, *_ in timed} == (everyone if gpu else {"DSNet"})
    if not gpu:
        assert not result["models"][estimate.TEACHER]["timed"]
        flops = estimate.flops_per_image(large, [estimate.TEACHER, "DSNet"])
        ratio = result["models"][estimate.TEACHER]["step_s"] / result["models"]["DSNet"]["step_s"]
        assert ratio == pytest.approx(flops[estimate.TEACHER] / flops["DSNet"])
        assert "not timed, scaled from DSNet's time by FLOPs" in result["method"]
    # time_all overrides either way
    timed.clear()
    estimate.estimate(small, steps=1, time_all=False)
    assert {n for n, *_ in timed} == {"DSNet"}


def test_flop_estimate_uses_the_assumed_t4_throughput():
    profile = config.get_profile("smoke", image_size=32)
    fp32 = estimate.flop_estimate(profile)
    mixed = estimate.flop_estimate(profile, precision="mixed_float16")
    assert list(fp32["notebooks"]) == NOTEBOOKS and fp32["runs"] == mixed["runs"] == 33
    assert 0 < mixed["hours"] < fp32["hours"]
    assert "ASSUMED T4 throughput" in fp32["method"] and "T4" in fp32["device"]
    assert fp32["models"]["ResNet50 teacher"]["gflops_per_image"] > fp32["models"]["DSNet"]["gflops_per_image"]


def test_flops_are_counted_once_per_model_and_size(monkeypatch):
    from kd_utils.tools import flops

    built = []
    build = steptime.build
    monkeypatch.setattr(steptime, "build", lambda name, size: built.append((name, size)) or build(name, size))
    monkeypatch.setattr(estimate, "_FLOPS", {})
    first = estimate.model_flops(["DSNet"], 32)
    assert estimate.model_flops(["DSNet"], 32) == first and built == [("DSNet", 32)]
    assert first["DSNet"] == flops.analytic_flops(models.build_dsnet(32))["total"]
    estimate.model_flops(["DSNet"], 48)
    assert built == [("DSNet", 32), ("DSNet", 48)]


def count_at_224(name: str) -> int:
    from kd_utils.tools import flops

    return flops.analytic_flops(steptime.build(name, 224))["total"]


def test_the_counts_at_224_px_are_those_of_the_models_built_now(monkeypatch):
    assert set(estimate.FLOPS_AT_224) == {estimate.TEACHER, "DSNet", *models.BACKBONES}
    for name in ("DSNet", "MobileNet"):  # the cheap ones here; every one in the slow test below
        assert estimate.FLOPS_AT_224[name] == count_at_224(name)
    monkeypatch.setattr(steptime, "build", lambda *args: pytest.fail("built a model whose count is known"))
    assert estimate.model_flops(["VGG16", "ResNet101"], 224) == {
        "VGG16": estimate.FLOPS_AT_224["VGG16"], "ResNet101": estimate.FLOPS_AT_224["ResNet101"]}


@pytest.mark.slow
def test_every_count_at_224_px_is_that_of_the_model_built_now():
    assert {name: count_at_224(name) for name in estimate.FLOPS_AT_224} == estimate.FLOPS_AT_224


def test_cli_estimate_json(capsys, monkeypatch):
    assert main(["estimate", "--profile", "smoke", "--flops", "--json", "--seeds", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == [10] and result["runs"] == hand_count(config.get_profile("smoke", seeds=(10,)))


USAGE = [
    ("steps-0", ["estimate", "--steps", "0"], ["--steps", ">= 1"]),
    ("profile", ["estimate", "--profile", "bogus"], ["'bogus'", "colab"]),
    ("students-unknown", ["estimate", "--students", "ResNet18"], ["--students", "'ResNet18'"]),
    ("students-without-effnet", ["estimate", "--students", "MobileNet"], ["EfficientNetB0 must be among them"]),
    ("reproduce-students", ["reproduce", "--students", "VGG16"], ["EfficientNetB0 must be among them"]),
    ("seeds-text", ["estimate", "--seeds", "ten"], ["--seeds", "'ten'"]),
]


def test_usage_errors_exit_2_with_one_line_before_tensorflow():
    cases = [(case_id, argv) for case_id, argv, _ in USAGE]
    results = run_cli_cases(cases)
    for case_id, _, words in USAGE:
        result = results[case_id]
        lines = result["stderr"].splitlines()
        assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case_id, result)
        assert all(word in lines[0] for word in words), (case_id, lines[0])
        assert result["stdout"] == ""
    assert results["_modules"] == []


def test_the_cpu_plan_counts_the_teachers_pretraining():
    cpu = config.get_profile("cpu")
    runs = estimate.planned_runs(cpu)
    assert len(runs) == hand_count(cpu)
    first, teacher = runs[0], runs[1]
    assert first.what.startswith("teacher pretraining") and teacher.model == estimate.TEACHER
    # 2 x 2,500 generated images (80% for training) for 2 epochs, as epochs over the 336 training images
    assert first.epochs == round(2 * (2 * 2500 * 0.8) / (2 * 600 * 0.4 * 0.7))


def measured_file(profile, step_s: dict, precision="float32") -> dict:
    """What ``python -m kd_utils.tools.steptime --out`` writes, with given step times."""
    return {"profile": profile.name, "image_size": profile.image_size, "batch_size": profile.batch_size,
            "device": "1 x Test GPU", "backend": "jax", "keras": "3.x", "steps": 10, "warmup": 3,
            "models": {m: {precision: {"step_s": s, "first_step_s": 1.0, "params": 1}} for m, s in step_s.items()}}


def test_hours_from_step_times_measured_elsewhere(capsys, tmp_path):
    profile = config.get_profile("smoke", image_size=32)
    names = [estimate.TEACHER, "DSNet", *profile.students]
    step_s = {name: 0.01 * (i + 1) for i, name in enumerate(names)}
    result = estimate.from_step_times(profile, measured_file(profile, step_s))
    sizes, _ = estimate.split_sizes(profile)
    by_hand = 0.0
    for run in estimate.planned_runs(profile):
        image_s = step_s[run.model] / profile.batch_size  # a training image; a forward one is a third of it
        by_hand += (run.epochs * (sizes["train"] * image_s + sizes["val"] * image_s / 3)
                    + sizes["test"] * image_s / 3 + estimate.RUN_OVERHEAD_S)
    assert result["hours"] == pytest.approx(by_hand / 3600)
    assert result["device"] == "1 x Test GPU" and "jax backend" in result["method"]
    assert {m: v["step_s"] for m, v in result["models"].items()} == step_s
    # From the command line; a measurement at another size or without a model is refused.
    path = tmp_path / "steps.json"
    path.write_text(json.dumps(measured_file(profile, step_s)))
    assert main(["estimate", "--profile", "smoke", "--step-times", str(path)]) == 2  # smoke is 75 px, not 32
    assert "measured at image_size 32, profile smoke uses 75" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no mixed_float16 step time for ResNet50 teacher"):
        estimate.from_step_times(profile, measured_file(profile, step_s), precision="mixed_float16")


def test_steptime_times_a_training_step_on_the_current_backend(tmp_path):
    from kd_utils.tools import steptime

    entry = steptime.time_step("DSNet", 224, 2, "float32", steps=1, warmup=1)  # the paper's size
    assert entry["params"] == 268_898 and entry["step_s"] > 0 and entry["first_step_s"] > 0
    with pytest.raises(ValueError, match="precision must be one of float32, mixed_float16"):
        steptime.time_step("DSNet", 32, 4, "bfloat16")
    out = tmp_path / "t.json"
    result = steptime.measure(config.get_profile("smoke", image_size=32, batch_size=4), ("float32",), steps=1,
                              warmup=1, models=["DSNet"], out=str(out), log=None)
    assert json.loads(out.read_text()) == result and result["backend"] == "tensorflow"
    assert set(result["models"]) == {"DSNet"} and result["image_size"] == 32
    assert "peak_memory_bytes" not in result["models"]["DSNet"]["float32"]  # no GPU here


def test_steptime_extends_its_file_and_keeps_jax_peaks_of_a_processes_first_model_only(tmp_path, monkeypatch):
    import keras

    from kd_utils.tools import steptime

    profile = config.get_profile("smoke", image_size=32, batch_size=4)
    calls = []

    def fake_step(name, image_size, batch_size, precision, steps, warmup):
        calls.append((name, precision))
        return {"step_s": 0.5, "first_step_s": 2.0, "params": len(calls), "peak_memory_bytes": 2**30 * len(calls)}

    monkeypatch.setattr(steptime, "time_step", fake_step)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    out = tmp_path / "t.json"
    first = steptime.measure(profile, ("float32",), steps=3, warmup=1, models=["DSNet", "VGG16"], out=str(out),
                             log=None)
    # Under JAX the second model's peak would include the first's: dropped.
    assert first["models"]["DSNet"]["float32"]["peak_memory_bytes"] == 2**30
    assert "peak_memory_bytes" not in first["models"]["VGG16"]["float32"]
    # A second process extends the file: earlier models and a note stay, the one timed again is replaced.
    out.write_text(json.dumps({**first, "measured": "a note"}))
    second = steptime.measure(profile, ("mixed_float16",), steps=3, warmup=1, models=["VGG16"], out=str(out),
                              log=None)
    assert json.loads(out.read_text()) == second
    assert set(second["models"]["VGG16"]) == {"float32", "mixed_float16"}
    assert second["models"]["VGG16"]["mixed_float16"]["peak_memory_bytes"] == 3 * 2**30
    assert second["models"]["DSNet"] == first["models"]["DSNet"] and second["measured"] == "a note"
    # A measurement taken another way is not mixed into the file.
    with pytest.raises(ValueError, match=r"holds another measurement \(steps 3 there, 10 now\)"):
        steptime.measure(profile, ("float32",), steps=10, warmup=1, models=["DSNet"], out=str(out), log=None)
    assert calls == [("DSNet", "float32"), ("VGG16", "float32"), ("VGG16", "mixed_float16")]


def test_steptime_reports_no_peak_memory_without_an_accelerator():
    from kd_utils.tools import steptime

    assert steptime.reset_peak_memory() is False and steptime.peak_memory_bytes() is None


def test_a_teacher_larger_than_its_students_is_counted_at_its_own_size():
    profile = config.get_profile("smoke", image_size=32, teacher_image_size=64)
    flops = estimate.flop_estimate(profile)["models"]
    teacher = estimate.model_flops([estimate.TEACHER], 64)[estimate.TEACHER]
    assert flops[estimate.TEACHER]["gflops_per_image"] == pytest.approx(teacher / 1e9)
    assert flops["DSNet"]["gflops_per_image"] == pytest.approx(estimate.model_flops(["DSNet"], 32)["DSNet"] / 1e9)
    assert teacher > 3.5 * estimate.model_flops([estimate.TEACHER], 32)[estimate.TEACHER]
    assert estimate.input_size(profile, estimate.TEACHER) == 64 and estimate.input_size(profile, "DSNet") == 32


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"steps"', '{"models": [1]}', "{not json", '{"image_size": 75}'])
def test_a_malformed_step_time_file_is_one_line_and_exit_2(tmp_path, capsys, content):
    path = tmp_path / "steps.json"
    path.write_text(content)
    assert main(["estimate", "--profile", "smoke", "--step-times", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --step-times {path}: ") and err.count("\n") == 1
