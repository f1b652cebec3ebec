import dataclasses
import os
import pytest

from kd_utils import config, paths
from kd_utils.experiments import notebook


def test_paper_profile_holds_the_papers_settings():
    p = config.get_profile("paper")
    assert (p.image_size, p.weights, p.batch_size, p.alpha, p.temperature) == (224, "imagenet", 64, 0.1, 10.0)
    assert (p.teacher_epochs, p.student_epochs) == (10, 20)
    assert p.temperatures == (1, 3, 5, 7, 10, 20, 50, 70, 90, 100)
    assert p.batch_sizes == (18, 32, 64, 96)
    assert (p.lr_backbone, p.lr_dsnet) == (1e-4, 1e-3)
    assert (p.val_fraction, p.test_fraction) == (0.2, 0.3)


def test_profiles_are_frozen_and_smoke_fits_inception():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.get_profile("cpu").image_size = 32
    assert config.get_profile("smoke").image_size >= 75
    assert config.get_profile("cpu").weights is None and config.get_profile("smoke").weights is None
    assert config.get_profile("smoke", student_epochs=3).student_epochs == 3


def test_profile_from_environment(monkeypatch):
    assert config.get_profile().name == "cpu"
    monkeypatch.setenv("KD_PROFILE", "smoke")
    assert config.get_profile().name == "smoke"
    monkeypatch.setenv("KD_PROFILE", "gpu")
    with pytest.raises(ValueError, match="Unknown profile 'gpu': expected one of paper, kaggle-cpu, kaggle-cpu-robust, cpu, smoke"):
        config.get_profile()


def test_profiles_list_their_large_students_and_refuse_unknown_ones():
    assert config.get_profile("paper").students == config.PRETRAINED_STUDENTS
    assert set(config.get_profile("cpu").students) == {"MobileNet", "EfficientNetB0"}
    assert set(config.get_profile("smoke").students) == {"MobileNet", "EfficientNetB0"}
    with pytest.raises(ValueError, match="EfficientNetB0 among them"):
        config.get_profile("cpu", students=("VGG16",))
    with pytest.raises(ValueError, match="got ResNet18, EfficientNetB0"):
        config.get_profile("cpu", students=("ResNet18", "EfficientNetB0"))


def test_colab_is_paper_with_exactly_the_documented_changes():
    paper, colab = config.get_profile("paper"), config.get_profile("colab")
    differ = {f.name for f in dataclasses.fields(config.Profile) if getattr(paper, f.name) != getattr(colab, f.name)}
    assert differ == {"name", *config.COLAB_CHANGES}
    assert all(getattr(colab, k) == v for k, v in config.COLAB_CHANGES.items())
    assert set(colab.temperatures) < set(paper.temperatures) and set(colab.seeds) < set(paper.seeds)
    assert colab.mixed_precision and not paper.mixed_precision
    assert "colab" in config.PROFILE_NAMES and paths.artifacts_dir(colab).name == "colab"


def test_each_robust_profile_is_its_plain_one_with_exactly_the_robust_changes():
    for plain, robust in (("kaggle-cpu", "kaggle-cpu-robust"), ("colab", "colab-robust")):
        before, after = config.get_profile(plain), config.get_profile(robust)
        differ = {f.name for f in dataclasses.fields(config.Profile)
                  if getattr(before, f.name) != getattr(after, f.name)}
        assert differ == {"name", *config.ROBUST_CHANGES}
        assert after.robust_teacher and after.robust_students and not after.color_constancy
        assert paths.artifacts_dir(after).name == robust
    assert config.get_profile("colab-robust").mixed_precision and config.get_profile("colab-robust").image_size == 224


def test_notebook_parameters_override_jit_and_students(capsys):
    profile = notebook.notebook_profile("smoke", "", False, True, "EfficientNetB0")
    assert profile.jit_compile is True and profile.students == ("EfficientNetB0",)
    assert "jit_compile on; students EfficientNetB0" in capsys.readouterr().out
    profile = notebook.notebook_profile("cpu", (), False, False, ("MobileNet", " EfficientNetB0"))
    assert profile.students == ("MobileNet", "EfficientNetB0") and profile.jit_compile is False
    assert notebook.notebook_profile("paper").students == config.PRETRAINED_STUDENTS
    with pytest.raises(ValueError, match="EfficientNetB0 among them"):
        notebook.notebook_profile("cpu", students="MobileNet")


def test_empty_seeds_and_students_parameters_fall_back_to_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("KD_SEEDS", "12")
    monkeypatch.setenv("KD_STUDENTS", "EfficientNetB0")
    profile = notebook.notebook_profile("smoke")
    assert profile.seeds == (12,) and profile.students == ("EfficientNetB0",)
    assert "seeds 12; students EfficientNetB0" in capsys.readouterr().out
    # A notebook's own parameters win over the environment.
    assert notebook.notebook_profile("smoke", "10,11", students="MobileNet,EfficientNetB0").seeds == (10, 11)
    monkeypatch.setenv("KD_STUDENTS", "MobileNet")
    with pytest.raises(ValueError, match="EfficientNetB0 among them"):
        notebook.notebook_profile("smoke")
    monkeypatch.delenv("KD_SEEDS")
    monkeypatch.delenv("KD_STUDENTS")
    assert notebook.notebook_profile("smoke").seeds == config.get_profile("smoke").seeds


def _machine(monkeypatch, gpu: bool, reachable: bool):
    """Fake what auto_profile looks at: a GPU, and whether Kaggle answers."""
    monkeypatch.setattr(notebook, "has_gpu", lambda: gpu)
    monkeypatch.setattr(notebook, "kaggle_reachable", lambda timeout=3.0: reachable)


@pytest.mark.parametrize("reachable", [False, True])
def test_auto_on_a_gpu_without_data_is_the_paper_profile_never_generated_images(monkeypatch, reachable):
    _machine(monkeypatch, gpu=True, reachable=reachable)
    name, why = notebook.auto_profile()
    assert name == "paper" and "downloaded to" in why
    assert config.get_profile(name).data_source == "folder"


def test_auto_without_a_gpu_takes_the_real_images_when_present_or_downloadable(monkeypatch):
    _machine(monkeypatch, gpu=False, reachable=True)
    name, why = notebook.auto_profile()
    assert name == "kaggle-cpu" and "downloaded to" in why
    _machine(monkeypatch, gpu=False, reachable=False)
    (paths.data_dir() / "melanoma_cancer_dataset").mkdir(parents=True)
    name, why = notebook.auto_profile()
    assert name == "kaggle-cpu" and "in " + str(paths.data_dir() / "melanoma_cancer_dataset") in why
    profile = config.get_profile(name)
    assert profile.data_source == "folder" and profile.weights is None and profile.split == "pooled"


def test_auto_falls_back_to_generated_images_only_without_gpu_data_or_network(monkeypatch, capsys):
    _machine(monkeypatch, gpu=False, reachable=False)
    name, why = notebook.auto_profile()
    assert name == "cpu" and "GENERATED images" in why and config.get_profile(name).data_source == "synthetic"
    assert notebook.notebook_profile("auto").name == "cpu"
    assert "profile cpu: no GPU, no real images" in capsys.readouterr().out
    monkeypatch.setenv("KD_PROFILE", "smoke")  # an explicit choice wins over the machine
    assert notebook.auto_profile() == ("smoke", "set by KD_PROFILE")


def test_a_failed_download_on_a_gpu_stops_in_one_line_and_falls_back_to_nothing(monkeypatch):
    from kd_utils.experiments import download

    _machine(monkeypatch, gpu=True, reachable=False)
    profile = config.get_profile(notebook.auto_profile()[0])

    class Offline:
        @staticmethod
        def dataset_download(handle, **kwargs):
            raise ConnectionError("Name or service not known")

    monkeypatch.setattr(download, "_import_kagglehub", lambda: Offline)
    with pytest.raises(download.DownloadError, match="Could not download .* network connection") as err:
        download.ensure_data(profile)
    assert "\n" not in str(err.value)
    assert not (paths.data_dir() / "melanoma_cancer_dataset" / "train").exists()


def test_the_teacher_may_see_larger_images_than_its_students():
    profile = config.get_profile("kaggle-cpu")
    assert profile.teacher_size == 64 and profile.image_size == 32
    assert profile.teacher_view().image_size == 64 and profile.teacher_view().name == profile.name
    smoke = config.get_profile("smoke")
    assert smoke.teacher_size == smoke.image_size and smoke.teacher_view() is smoke
    with pytest.raises(ValueError, match="teacher_image_size must be None or a whole number of at least image_size"):
        smoke.replace(teacher_image_size=16)


def test_the_notebook_setup_on_colab_and_elsewhere(monkeypatch, capsys):
    """On Colab: KD_ROOT is the checkout and, with USE_DRIVE, Drive is mounted and
    holds artifacts and results; elsewhere nothing changes but a line about Drive."""
    import sys
    import types

    mounted = []
    drive = types.SimpleNamespace(mount=mounted.append)
    for name in ("KD_ARTIFACTS", "KD_RESULTS", "KD_ROOT"):
        monkeypatch.setenv(name, "set")  # recorded, so that what the Colab branch sets is undone after the test
        monkeypatch.delenv(name)
    profile, results = notebook.start("smoke", use_drive=True)
    assert profile.name == "smoke" and results == paths.results_dir(profile)
    assert "USE_DRIVE is for Colab" in capsys.readouterr().out and "KD_ARTIFACTS" not in os.environ
    monkeypatch.setitem(sys.modules, "google", types.SimpleNamespace(colab=types.SimpleNamespace(drive=drive)))
    monkeypatch.setitem(sys.modules, "google.colab", sys.modules["google"].colab)
    profile, results = notebook.start("smoke", use_drive=True, seeds="3")
    assert mounted == ["/content/drive"] and profile.seeds == (3,)
    assert os.environ["KD_ROOT"] == notebook.COLAB_CHECKOUT
    assert os.environ["KD_ARTIFACTS"] == "/content/drive/MyDrive/kd-melanoma/artifacts"
    assert str(results).startswith("/content/drive/MyDrive/kd-melanoma/results")
    out = capsys.readouterr().out
    assert "profile smoke with seeds 3" in out and "tables and figures: /content/drive" in out


def test_student_patience_is_a_whole_number_or_none():
    assert config.get_profile("kaggle-cpu").student_patience is None
    assert config.get_profile("smoke", student_patience=3).student_patience == 3
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="student_patience must be None or a whole number of at least 1"):
            config.get_profile("smoke", student_patience=bad)


def test_students_weight_average_is_a_momentum_in_the_robust_profiles_only():
    from kd_utils.experiments import runs

    assert all(config.get_profile(n).student_weight_average == 0.99 for n in ("kaggle-cpu-robust", "colab-robust"))
    assert all(config.get_profile(n).student_weight_average is None
               for n in ("paper", "colab", "kaggle-cpu", "cpu", "smoke"))
    for bad in (0.0, 1.0, 1, "0.9"):
        with pytest.raises(ValueError, match="student_weight_average must be None or a momentum in \\(0, 1\\)"):
            config.get_profile("smoke", student_weight_average=bad)
    plain = config.get_profile("smoke")
    averaged = plain.replace(student_weight_average=0.9)
    key, _, run_config = runs.student_run(averaged, "m", "t")
    assert run_config["weight_average"] == 0.9 and key != runs.student_run(plain, "m", "t")[0]
    assert "weight_average" not in runs.student_run(plain, "m", "t")[2]  # runs without it keep their keys
    assert runs.teacher_run(averaged, "m")[0] == runs.teacher_run(plain, "m")[0]  # students only
    adam = runs.optimizer(1e-3, False, 1, 0.9)
    assert adam.use_ema and adam.ema_momentum == 0.9 and not runs.optimizer(1e-3, False).use_ema
    # with micro-batches the average moves at each of them: 0.9 per update is 0.9 ** (1/4) per micro-batch
    assert runs.optimizer(1e-3, False, 4, 0.9).ema_momentum == pytest.approx(0.9 ** 0.25)


def test_the_convergence_check_trains_longer_with_patience_on_two_seeds():
    profile = config.get_profile("kaggle-cpu")
    check = profile.converged()
    assert (check.student_epochs, check.student_patience, check.seeds) == (40, 10, (10, 11))
    # everything else is the profile's: the check's no-teacher runs differ from notebook 03's only by schedule
    assert check.replace(student_epochs=12, student_patience=None, seeds=profile.seeds) == profile
    assert config.get_profile("paper").converged() is None
    for field, bad in (("converged_epochs", -1), ("converged_epochs", 2.0), ("converged_patience", 0)):
        with pytest.raises(ValueError, match=f"{field} must be a whole number of at least"):
            config.get_profile("smoke", **{field: bad})
