"""Screening a candidate setting: validation split and battery only, changes in the run keys."""

import json

import keras
import pytest

from kd_utils import batches, config, models
from kd_utils.experiments import pipeline
from kd_utils.tools import screen, shortcuts


@pytest.mark.parametrize("text, expected", [
    ("color_constancy=false", ("color_constancy", False)),
    ("color_constancy=On", ("color_constancy", True)),
    ("student_epochs=40", ("student_epochs", 40)),
    ("student_weight_average=none", ("student_weight_average", None)),
    ("lr_dsnet=3e-4", ("lr_dsnet", 3e-4)),
    ("temperature=1", ("temperature", 1.0)),
])
def test_settings_are_parsed_to_the_fields_type(text, expected):
    assert screen.parse_setting(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("vignette_probability=0.5", ("vignette_probability", 0.5)),
    ("zoom=0.6,1.5", ("zoom", (0.6, 1.5))),
    ("channel_gain=0.8,1.25", ("channel_gain", (0.8, 1.25))),
])
def test_views_are_parsed_to_the_entrys_shape(text, expected):
    assert screen.parse_view(text) == expected


@pytest.mark.parametrize("parse, text, words", [
    (screen.parse_setting, "image_size=64", ["'image_size' is not a setting", "batch_size"]),
    (screen.parse_setting, "batch_size=big", ["batch_size takes a whole number", "'big'"]),
    (screen.parse_setting, "=1", ["expected NAME=VALUE"]),
    (screen.parse_setting, "lr_dsnet=none", ["lr_dsnet takes a number", "'none'"]),
    (screen.parse_view, "hue=0.1", ["hue takes LOW,HIGH", "now -0.04,0.04"]),
    (screen.parse_view, "field_probability=none", ["field_probability takes numbers"]),
    (screen.parse_view, "channel_gain=0,1.2", ["channel_gain takes factors above 0"]),
])
def test_bad_changes_say_what_is_wrong(parse, text, words):
    with pytest.raises(screen.ScreenError) as err:
        parse(text)
    for word in words:
        assert word in str(err.value)


def test_view_changes_last_as_long_as_the_block_even_when_it_fails():
    before = dict(batches.ROBUST)
    with pytest.raises(RuntimeError):
        with screen.robust_views({"vignette_probability": 0.5, "zoom": (0.6, 1.5)}):
            assert batches.ROBUST["vignette_probability"] == 0.5 and batches.ROBUST["zoom"] == (0.6, 1.5)
            raise RuntimeError("a run failed")
    assert batches.ROBUST == before


@pytest.fixture
def tiny_screen(tiny_manifest, monkeypatch):
    """The smoke profile on the tiny manifest, every split a screen reads recorded."""
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1, 2), student_epochs=1,
                                 robust_students=True)
    monkeypatch.setattr(pipeline, "prepare_data", lambda p, *a, **k: tiny_manifest)
    scored = []
    report = shortcuts.report_split

    def recording(model, manifest, split="val", **kwargs):
        scored.append(split)
        return report(model, manifest, split, **kwargs)

    monkeypatch.setattr(shortcuts, "report_split", recording)
    return profile, scored


def test_a_screen_trains_dsnet_without_teacher_per_seed_and_scores_validation_only(tiny_screen, tiny_manifest):
    profile, scored = tiny_screen
    base = screen.screen(profile, log=lambda line: None)
    assert scored == ["val", "val"]
    assert list(base.runs.seed) == [1, 2] and set(base.runs.model) == {"DSNet without teacher"}
    assert list(base.flips.columns) == ["DSNet s1", "DSNet s2"]
    names = [t.name for t in shortcuts.BATTERY + shortcuts.FLOOR]
    assert list(base.flips.index) == names
    # The largest flip is the battery's, never the floor's.
    for _, row in base.runs.iterrows():
        column = base.flips[f"DSNet s{row.seed}"]
        assert row["largest flip"] == pytest.approx(column.iloc[:len(shortcuts.BATTERY)].max())
        assert row["transforms over 5%"] == int((column.iloc[:len(shortcuts.BATTERY)] > 0.05).sum())
    # The same runs as the profile's own: the baseline of a screen is the profile.
    again = [pipeline.distill_student(profile, tiny_manifest, None, alpha=1.0, seed=s, verbose=0)[1]["key"]
             for s in (1, 2)]
    assert list(base.runs.key) == again
    document = json.dumps(base.to_json())
    assert "test" not in document.lower()


def test_a_changed_setting_or_view_trains_new_runs_and_leaves_the_views_as_they_were(tiny_screen):
    profile, _ = tiny_screen
    before = dict(batches.ROBUST)
    base = screen.screen(profile, seeds=[1], log=lambda line: None)
    views = screen.screen(profile, views={"vignette_probability": 0.5}, seeds=[1], log=lambda line: None)
    plain = screen.screen(profile, {"color_constancy": True}, seeds=[1], log=lambda line: None)
    keys = [r.runs.key[0] for r in (base, views, plain)]
    assert len(set(keys)) == 3
    assert views.changes == {"views.vignette_probability": 0.5} and plain.changes == {"color_constancy": True}
    assert batches.ROBUST == before


@pytest.fixture
def trained_teachers(monkeypatch):
    """``pipeline.train_teacher`` replaced by a small model with a made-up record
    (4 epochs, best the 3rd, validation 0.75); the profiles it was given, in order."""
    trained = []

    def fake_teacher(p, manifest, verbose=0):
        trained.append(p)
        keras.utils.set_random_seed(0)
        model = models.build_dsnet(32)
        return model, {"key": "t", "best_val_accuracy": 0.75, "best_epoch": 3, "history": {"loss": [1.0] * 4}}

    monkeypatch.setattr(pipeline, "train_teacher", fake_teacher)
    return trained


def test_the_teacher_is_screened_with_the_changed_profile(tiny_screen, trained_teachers):
    profile, scored = tiny_screen
    trained = trained_teachers
    result = screen.screen(profile, {"color_constancy": True}, models=("teacher",), log=lambda line: None)
    assert [p.color_constancy for p in trained] == [True]
    assert scored == ["val"]
    row = result.runs.iloc[0]
    assert (row.model, row.seed, row["val accuracy"], row.epochs, row["best epoch"]) == ("teacher", 10, 0.75, 4, 3)
    assert list(result.flips.columns) == ["teacher"]


def test_distilled_students_learn_from_the_screened_teacher_trained_once(tiny_screen, trained_teachers):
    profile, scored = tiny_screen
    trained = trained_teachers
    result = screen.screen(profile, models=("teacher", "distilled", "dsnet"), log=lambda line: None)
    assert len(trained) == 1
    assert list(result.runs.model) == ["teacher"] + ["DSNet distilled (T = 10, alpha = 0.1)"] * 2 + [
        "DSNet without teacher"] * 2
    assert list(result.flips.columns) == ["teacher", "distilled s1", "distilled s2", "DSNet s1", "DSNet s2"]
    assert scored == ["val"] * 5
    distilled, alone = result.runs.key[1:3].tolist(), result.runs.key[3:].tolist()
    assert not set(distilled) & set(alone)


def test_controls_are_screened_on_the_same_teacher_as_notebook_07s_runs(tiny_screen, trained_teachers, tiny_manifest):
    profile, scored = tiny_screen
    result = screen.screen(profile, models=("shuffled", "distilled", "uniform"), seeds=[1], log=lambda line: None)
    assert len(trained_teachers) == 1
    # The order is fixed (distilled, then the controls), whatever the order asked.
    assert list(result.runs.model) == ["DSNet distilled (T = 10, alpha = 0.1)", "DSNet, uniform teacher (T = 10, alpha = 0.1)",
                                       "DSNet, shuffled teacher (T = 10, alpha = 0.1)"]
    assert list(result.flips.columns) == ["distilled s1", "uniform s1", "shuffled s1"]
    assert scored == ["val"] * 3
    teacher, _ = pipeline.train_teacher(profile, tiny_manifest)
    for control, key in zip((None, "uniform", "shuffled"), result.runs.key):
        model, record = pipeline.distill_student(profile, tiny_manifest, teacher, seed=1, teacher_control=control,
                                                 verbose=0)
        assert record["key"] == key and record["config"]["teacher_control"] == control
    assert len(set(result.runs.key)) == 3


def test_temperature_and_alpha_change_the_taught_runs_only(tiny_screen, trained_teachers):
    profile, _ = tiny_screen
    base = screen.screen(profile, models=("distilled", "dsnet"), seeds=[1], log=lambda line: None)
    cold = screen.screen(profile, {"temperature": 1.0, "alpha": 0.5}, models=("distilled", "dsnet"), seeds=[1],
                         log=lambda line: None)
    assert list(cold.runs.model) == ["DSNet distilled (T = 1, alpha = 0.5)", "DSNet without teacher"]
    assert cold.runs.key[0] != base.runs.key[0]
    assert cold.runs.key[1] == base.runs.key[1]  # without a teacher, T and alpha play no part
    with pytest.raises(ValueError, match="temperature must be positive, got 0.0"):
        screen.screen(profile, {"temperature": 0.0}, models=("distilled",))


def test_the_screens_models_are_the_pipelines_controls_and_the_command_lines_choices():
    from kd_utils.__main__ import build_parser
    from kd_utils.experiments import runs

    assert screen.CONTROLS == runs.TEACHER_CONTROLS
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["screen"]
    models = next(a for a in sub._actions if a.dest == "models")
    assert tuple(models.choices) == screen.MODELS


def test_screen_refuses_what_it_cannot_change(tiny_screen):
    profile, _ = tiny_screen
    with pytest.raises(screen.ScreenError, match="'image_size' is not a setting"):
        screen.screen(profile, {"image_size": 64})
    with pytest.raises(screen.ScreenError, match="models are some of dsnet, teacher, distilled, uniform, shuffled, got vgg"):
        screen.screen(profile, models=("vgg",))
    with pytest.raises(screen.ScreenError, match="no convergence schedule"):
        screen.screen(config.get_profile("paper"), converged=True)


def test_converged_screens_use_the_profiles_convergence_schedule(tiny_screen):
    profile, _ = tiny_screen
    result = screen.screen(profile, converged=True, log=lambda line: None)
    schedule = profile.converged()
    assert list(result.runs.seed) == list(schedule.seeds)
    assert result.changes["schedule"] == (f"converged: up to {schedule.student_epochs} epochs, "
                                          f"patience {schedule.student_patience}")
    assert all(e <= schedule.student_epochs for e in result.runs.epochs)
