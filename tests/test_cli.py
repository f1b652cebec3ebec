"""Bad input and misuse of the command line (issue 12): one table-driven case each.

Usage errors are checked in one child interpreter in which importing
TensorFlow, Keras or LiteRT fails: a case that passes there was refused
before TensorFlow, in one line, with exit code 2. The cases that need a model
(predict, export) run in this process with small generated models.
"""

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SIZE = 32

# --------------------------------------------------------------------------- usage errors, before TensorFlow

#: (case id, argv, environment, words the one error line must hold). Paths use
#: {tmp}; every case must exit 2 with exactly one line on stderr.
USAGE_CASES = [
    ("no-command", [], {}, ["required: COMMAND"]),
    ("unknown-command", ["train"], {}, ["invalid choice: 'train'", "reproduce", "predict"]),
    ("quickstart-profile", ["quickstart", "--profile", "bogus"], {}, ["--profile", "'bogus'", "paper", "cpu", "smoke"]),
    ("export-profile", ["export", "{tmp}/model.keras", "--profile", "bogus"], {}, ["'bogus'", "paper", "smoke"]),
    ("predict-profile", ["predict", "{tmp}/a.png", "--profile", "bogus"], {}, ["'bogus'", "paper", "smoke"]),
    ("reproduce-profile", ["reproduce", "--profile", "bogus"], {}, ["'bogus'", "paper", "smoke"]),
    ("reproduce-dry-run-cpu", ["reproduce", "--profile", "cpu", "--dry-run"], {}, ["--dry-run", "--profile cpu", "paper"]),
    ("env-profile-quickstart", ["quickstart"], {"KD_PROFILE": "bogus"}, ["KD_PROFILE='bogus'", "paper, kaggle-cpu, kaggle-cpu-robust, cpu, smoke"]),
    ("env-profile-export", ["export", "dsnet"], {"KD_PROFILE": "bogus"}, ["KD_PROFILE='bogus'", "paper, kaggle-cpu, kaggle-cpu-robust, cpu, smoke"]),
    ("env-profile-predict", ["predict", "{tmp}/a.png"], {"KD_PROFILE": "bogus"}, ["KD_PROFILE='bogus'"]),
    ("env-profile-reproduce", ["reproduce"], {"KD_PROFILE": "bogus"}, ["KD_PROFILE='bogus'"]),
    ("benchmark-runs-0", ["benchmark", "--runs", "0"], {}, ["--runs", "whole number >= 1", "got 0"]),
    ("benchmark-runs-text", ["benchmark", "--runs", "ten"], {}, ["--runs", "whole number >= 1", "'ten'"]),
    ("benchmark-out-file", ["benchmark", "--out", "{tmp}/a_file"], {}, ["--out", "is a file, not a folder"]),
    ("quickstart-epochs-0", ["quickstart", "--teacher-epochs", "0"], {}, ["--teacher-epochs", ">= 1", "got 0"]),
    ("artifacts-file", ["quickstart"], {"KD_ARTIFACTS": "{tmp}/a_file"}, ["KD_ARTIFACTS=", "is a file, not a folder"]),
    ("artifacts-under-file", ["export", "dsnet"], {"KD_ARTIFACTS": "{tmp}/a_file/sub"},
     ["KD_ARTIFACTS=", "is inside", "which is a file"]),
    ("artifacts-file-predict", ["predict", "{tmp}/a.png"], {"KD_ARTIFACTS": "{tmp}/a_file"}, ["KD_ARTIFACTS="]),
    ("data-dir-file", ["quickstart"], {"KD_DATA_DIR": "{tmp}/a_file"}, ["KD_DATA_DIR=", "is a file"]),
    ("only-unknown", ["reproduce", "--only", "99"], {}, ["--only '99' matches no notebook", "01_data_preparation", "07"]),
    ("only-one-unknown", ["reproduce", "--only", "01", "8"], {}, ["--only '8'"]),
    ("only-empty", ["reproduce", "--only"], {}, ["--only needs at least one notebook prefix", "01", "07"]),
    ("shard-out-of-range", ["reproduce", "--shard", "2/2"], {}, ["--shard 2/2", "0 <= i < n", "0/2"]),
    ("shard-not-numbers", ["reproduce", "--shard", "first"], {}, ["--shard first", "expected i/n"]),
    ("shard-zero-count", ["reproduce", "--shard", "0/0"], {}, ["--shard 0/0", "0 <= i < n"]),
    ("shard-env", ["reproduce"], {"KD_SHARD": "1/1"}, ["KD_SHARD='1/1'", "0 <= i < n"]),
    ("shard-wait-env", ["reproduce", "--shard", "0/2"], {"KD_SHARD_WAIT": "soon"}, ["KD_SHARD_WAIT='soon'", "seconds >= 0"]),
    ("predict-model-missing", ["predict", "{tmp}/a.png", "--model", "{tmp}/missing.keras"], {}, ["missing.keras", "no such file"]),
    ("predict-model-suffix", ["predict", "{tmp}/a.png", "--model", "{tmp}/model.onnx"], {},
     ["Unsupported model file", "model.onnx", ".keras or .tflite", "'.onnx'"]),
    ("predict-model-folder", ["predict", "{tmp}/a.png", "--model", "{tmp}/folder.keras"], {}, ["folder.keras", "is a folder"]),
    ("predict-json-and-csv", ["predict", "{tmp}/a.png", "--model", "{tmp}/model.keras", "--json", "--csv"], {},
     ["--csv", "not allowed with argument --json"]),
    ("export-missing", ["export", "{tmp}/missing.keras"], {}, ["missing.keras", "no such file"]),
    ("export-tflite", ["export", "{tmp}/model.tflite"], {}, ["MODEL must be a .keras file or 'dsnet'"]),
    ("export-quantize", ["export", "{tmp}/model.keras", "--quantize", "float16"], {},
     ["invalid choice: 'float16'", "'int8'"]),
    ("export-one-file-many", ["export", "{tmp}/model.keras", "--quantize", "all", "--out", "{tmp}/x.tflite"], {},
     ["x.tflite names one file but 3 quantizations"]),
    ("calibration-without-int8", ["export", "{tmp}/model.keras", "--calibration", "{tmp}/five"], {},
     ["--calibration", "only int8 is calibrated"]),
    ("calibration-missing", ["export", "{tmp}/model.keras", "--quantize", "int8", "--calibration", "{tmp}/nope"], {},
     ["--calibration", "nope", "no such folder"]),
    ("screen-unknown-setting", ["screen", "--set", "lr=1"], {},
     ["'lr' is not a setting a screen can change", "color_constancy", "--view"]),
    ("screen-setting-form", ["screen", "--set", "color_constancy"], {}, ["expected NAME=VALUE", "'color_constancy'"]),
    ("screen-bool", ["screen", "--set", "color_constancy=maybe"], {}, ["color_constancy takes true or false", "'maybe'"]),
    ("screen-int", ["screen", "--set", "student_epochs=2.5"], {}, ["student_epochs takes a whole number", "'2.5'"]),
    ("screen-profile-check", ["screen", "--set", "student_epochs=0"], {},
     ["--set: student_epochs must be a whole number of at least 1, got 0"]),
    ("screen-unknown-view", ["screen", "--view", "blur=1"], {}, ["'blur' is not a number of the robust views", "zoom"]),
    ("screen-view-order", ["screen", "--view", "zoom=2,1"], {}, ["zoom takes LOW,HIGH with LOW <= HIGH", "'2,1'"]),
    ("screen-view-one", ["screen", "--view", "vignette_probability=0.2,0.3"], {},
     ["vignette_probability takes one number", "now 0.25"]),
    ("screen-no-schedule", ["screen", "--profile", "paper", "--converged"], {},
     ["--converged", "profile paper has no convergence schedule"]),
    ("screen-model", ["screen", "--models", "vgg"], {}, ["invalid choice: 'vgg'", "'teacher'"]),
    ("calibration-too-few", ["export", "{tmp}/model.keras", "--quantize", "int8", "--calibration", "{tmp}/five"], {},
     ["--calibration", "5 .jpg/.jpeg/.png file(s)", "100 to 500"]),
]

CHILD = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, os, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "ai_edge_litert"):
                raise ImportError(f"{name} imported before the arguments were checked")

    sys.meta_path.insert(0, Block())
    from kd_utils.__main__ import entry

    out = {}
    for case_id, argv, env in json.loads(sys.argv[1]):
        saved = dict(os.environ)
        os.environ.update(env)
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = entry(argv)
        os.environ.clear()
        os.environ.update(saved)
        out[case_id] = {"code": code, "stderr": err.getvalue(), "stdout": std.getvalue()}
    out["_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def usage_results(tmp_path_factory):
    """Every usage case, run once in a child interpreter that cannot import TensorFlow."""
    tmp = tmp_path_factory.mktemp("usage")
    (tmp / "a_file").write_text("a file where a folder belongs")
    (tmp / "model.keras").write_bytes(b"not checked before the arguments are")
    (tmp / "model.tflite").write_bytes(b"")
    (tmp / "model.onnx").write_bytes(b"")
    (tmp / "folder.keras").mkdir()
    (tmp / "five").mkdir()
    for i in range(5):
        Image.new("RGB", (40, 40), (i, 0, 0)).save(tmp / "five" / f"{i}.png")
    cases = [
        (case_id, [a.replace("{tmp}", str(tmp)) for a in argv], {k: v.replace("{tmp}", str(tmp)) for k, v in env.items()})
        for case_id, argv, env, _ in USAGE_CASES
    ]
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("case_id, argv, env, words", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_usage_error_is_one_line_and_exit_2_before_tensorflow(usage_results, case_id, argv, env, words):
    result = usage_results[case_id]
    lines = result["stderr"].splitlines()
    assert result["code"] == 2, result
    assert len(lines) == 1 and lines[0].startswith("error: "), result["stderr"]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result["stdout"] == ""


def test_usage_checks_never_imported_tensorflow(usage_results):
    assert usage_results["_modules"] == []


def test_python_dash_m_exits_2_with_one_line(tmp_path):
    """The real entry point: exit status 2, one stderr line, no traceback, long before TensorFlow would load."""
    run = subprocess.run([sys.executable, "-m", "kd_utils", "benchmark", "--runs", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: argument --runs: expected a whole number >= 1, got 0 (see python -m kd_utils benchmark --help)"
    ]


# --------------------------------------------------------------------------- generated models and images


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models at 32 px: a two-class one (orientation-sensitive: flatten + dense), one and
    three outputs (.keras and .tflite), and damaged files."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(1)

    def dense_model(units):
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
        return keras.Model(inputs, keras.layers.Dense(units)(x))

    paths = {}
    for units, name in ((2, "two"), (1, "one"), (3, "three")):
        paths[name] = folder / f"{name}.keras"
        dense_model(units).save(paths[name])
    inputs = keras.Input((SIZE, SIZE, 3))
    flat = keras.layers.Flatten()(inputs)
    paths["two_heads"] = folder / "two_heads.keras"
    keras.Model(inputs, [keras.layers.Dense(2)(flat), keras.layers.Dense(2)(flat)]).save(paths["two_heads"])
    for units, name in ((1, "one"), (3, "three")):
        fn = tf.function(lambda x, k=units: tf.reduce_mean(x, axis=[1, 2])[:, :k],
                         input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        paths[f"{name}_tflite"] = folder / f"{name}.tflite"
        paths[f"{name}_tflite"].write_bytes(converter.convert())
    good = paths["two"].read_bytes()
    paths["truncated"] = folder / "truncated.keras"
    paths["truncated"].write_bytes(good[: len(good) // 2])
    paths["text"] = folder / "text.keras"
    paths["text"].write_text("this is not a model")
    paths["zip_not_keras"] = folder / "zip_not_keras.keras"
    with zipfile.ZipFile(paths["zip_not_keras"], "w") as archive:
        archive.writestr("readme.txt", "a zip, but not a Keras model")
    paths["garbage_tflite"] = folder / "garbage.tflite"
    paths["garbage_tflite"].write_bytes(b"\x00" * 64)
    three = paths["three_tflite"].read_bytes()
    paths["truncated_tflite"] = folder / "truncated.tflite"
    paths["truncated_tflite"].write_bytes(three[: len(three) // 2])
    return paths


def lesion(size=(64, 48), seed=0) -> Image.Image:
    """An asymmetric RGB image (so that a rotation changes what the model sees)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 3, : size[0] // 2] = (250, 30, 30)
    return Image.fromarray(pixels)


def rotated_with_exif(path, image: Image.Image, orientation: int = 6) -> None:
    """Stores ``image`` turned so that EXIF ``orientation`` is needed to show it as ``image``."""
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.transpose(undo[orientation]).save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))


def image_file(folder: Path, kind: str) -> Path:
    """One bad or good input of the kind named, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tiny":
        path = folder / "tiny.png"
        Image.new("RGB", (1, 1), (200, 100, 50)).save(path)
    elif kind == "strip":
        path = folder / "strip.png"
        Image.new("RGB", (10000, 10), (200, 100, 50)).save(path)
    elif kind == "elongated":
        path = folder / "elongated.png"
        lesion((400, 40)).save(path)
    elif kind == "text":
        path = folder / "text.jpg"
        path.write_text("not an image")
    elif kind == "truncated":
        path = folder / "truncated.jpg"
        lesion().save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path = folder / f"{kind}.png"
        lesion(seed=hash(kind) % 1000).save(path)
    return path


# --------------------------------------------------------------------------- predict


#: (case id, files written, model, exit code, words in stderr, words in stdout)
PREDICT_CASES = [
    ("one-pixel-image", ["tiny"], "two", 1, ["tiny.png: too small: 1x1 < 32 px"], ["0 of 1 file(s) predicted", "; 1 failed"]),
    ("10000x10-strip", ["strip"], "two", 1, ["strip.png: too small: 10000x10 < 32 px"], ["0 of 1"]),
    ("elongated-image", ["elongated", "good"], "two", 1, ["elongated.png: too elongated: 400x40, more than 4:1"],
     ["good.png", "1 of 2 file(s) predicted", "1 failed"]),
    ("3-of-6-fail", ["good", "good2", "good3", "tiny", "text", "truncated"], "two", 1,
     ["tiny.png: too small", "text.jpg: not an image", "truncated.jpg: unreadable or truncated"],
     ["good.png", "good2.png", "good3.png", "3 of 6 file(s) predicted", "3 failed"]),
    ("all-good", ["good", "good2"], "two", 0, [], ["2 of 2 file(s) predicted with"]),
    ("three-outputs-keras", ["good"], "three", 2, ["not a two-class model: it gives 3 value(s) per image", "(n, 2)"], []),
    ("one-output-keras", ["good"], "one", 2, ["not a two-class model: it gives 1 value(s) per image"], []),
    ("two-heads-keras", ["good"], "two_heads", 2, ["not a two-class model: it has 2 outputs"], []),
    ("three-outputs-tflite", ["good"], "three_tflite", 2, ["three.tflite: not a two-class model: it gives 3 value"], []),
    ("one-output-tflite", ["good"], "one_tflite", 2, ["one.tflite: not a two-class model: it gives 1 value"], []),
    ("truncated-keras", ["good"], "truncated", 2, ["truncated.keras: damaged or not a Keras/TFLite model"], []),
    ("text-as-keras", ["good"], "text", 2, ["text.keras: damaged or not a Keras/TFLite model"], []),
    ("zip-not-keras", ["good"], "zip_not_keras", 2, ["zip_not_keras.keras: damaged or not a Keras/TFLite model"], []),
    ("garbage-tflite", ["good"], "garbage_tflite", 2, ["garbage.tflite: damaged or not a Keras/TFLite model"], []),
    ("truncated-tflite", ["good"], "truncated_tflite", 2, ["truncated.tflite: damaged or not a Keras/TFLite model"], []),
]


@pytest.mark.parametrize("case_id, kinds, model, code, err_words, out_words", PREDICT_CASES,
                         ids=[c[0] for c in PREDICT_CASES])
def test_predict_bad_input(models, tmp_path, capsys, case_id, kinds, model, code, err_words, out_words):
    from kd_utils.__main__ import main

    for kind in kinds:
        image_file(tmp_path / "in", kind)
    assert main(["predict", str(tmp_path / "in"), "--model", str(models[model])]) == code
    out, err = capsys.readouterr()
    assert "not a diagnostic device" in out
    for word in err_words:
        assert word in err, (word, err)
    for word in out_words:
        assert word in out, (word, out)
    assert "Traceback" not in err
    if code == 2:  # a refused model: one line, nothing predicted
        assert [line for line in err.splitlines() if line.startswith("error:")] == err.strip().splitlines()[-1:]
        assert "file(s) predicted" not in out
    if code == 1:
        failed = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(failed) == sum(k in ("tiny", "strip", "elongated", "text", "truncated") for k in kinds)


@pytest.mark.parametrize("suffix, orientation", [(".jpg", 6), (".png", 8), (".jpg", 3)])
def test_exif_orientation_is_applied_in_predict_and_in_training_alike(models, tmp_path, suffix, orientation):
    """A file stored rotated with an EXIF tag is read as a viewer shows it, by predict and by the
    manifest builder (whose upright copy the tf.data loader reads): the same pixels both ways."""
    from kd_utils import batches, data, images, sources
    from kd_utils.tools import deploy

    upright = lesion((64, 48), seed=3)
    rotated = tmp_path / f"benign/rotated{suffix}"
    rotated.parent.mkdir()
    rotated_with_exif(rotated, upright, orientation)
    with Image.open(rotated) as stored:
        assert images.exif_orientation(stored) == orientation and images.shown_size(stored) == (64, 48)
        as_stored = batches.resize_image(np.asarray(stored.convert("RGB")), SIZE).numpy()
    as_shown = deploy.read_image(rotated, SIZE)
    reference = tmp_path / "upright.png"
    if suffix == ".jpg":  # compare with the decoded JPEG turned by hand (JPEG is lossy)
        with Image.open(rotated) as stored:
            undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
            stored.convert("RGB").transpose(undo[orientation]).save(reference)
    else:
        upright.save(reference)
    np.testing.assert_array_equal(as_shown, deploy.read_image(reference, SIZE))
    assert np.abs(as_shown.astype(int) - as_stored.astype(int)).mean() > 20  # the rotation mattered

    # Training: the manifest builder stores the file upright; tf.data reads that copy.
    checked = data._check_file(sources.Candidate(rotated, 0), tmp_path / "converted", images.MIN_SIDE, SIZE)
    assert checked.status == "converted" and f"EXIF orientation {orientation} applied" in checked.reason
    assert (checked.width, checked.height) == (64, 48)
    np.testing.assert_array_equal(batches.load_image(str(checked.path), SIZE).numpy(), as_shown)

    # predict gives the probability of the upright image.
    by_file = {Path(r.path).name: r.malignant_probability
               for r in deploy.predict_paths([rotated, reference], models["two"])}
    assert by_file[rotated.name] == pytest.approx(by_file["upright.png"], abs=1e-6)


def test_training_excludes_what_predict_refuses(tmp_path):
    from kd_utils import data, images, sources

    for kind, reason in (("tiny", "too small: 1x1 < 32 px"), ("elongated", "too elongated: 400x40, more than 4:1")):
        checked = data._check_file(sources.Candidate(image_file(tmp_path, kind), 0), tmp_path / "conv", images.MIN_SIDE, SIZE)
        assert (checked.status, checked.reason) == ("excluded", reason)


@pytest.mark.parametrize("form", ["json", "csv"])
def test_predict_json_and_csv_for_scripts(models, tmp_path, capsys, form):
    import pandas as pd

    from kd_utils.__main__ import main

    for kind in ("good", "good2", "tiny"):
        image_file(tmp_path / "in", kind)
    assert main(["predict", str(tmp_path / "in"), "--model", str(models["two"]), f"--{form}"]) == 1
    out, err = capsys.readouterr()
    assert "not a diagnostic device" in err and "2 of 3 file(s) predicted" in err and "tiny.png: too small" in err
    if form == "json":
        doc = json.loads(out)
        assert (doc["predicted"], doc["failed"], doc["image_size"]) == (2, 1, SIZE)
        assert "not a diagnostic device" in doc["disclaimer"]
        rows = pd.DataFrame(doc["results"])
    else:
        import io

        rows = pd.read_csv(io.StringIO(out), keep_default_na=False, na_values={"malignant_probability": [""]})
    assert list(rows.columns) == ["path", "malignant_probability", "label", "error"]
    rows["name"] = rows.path.map(lambda p: Path(p).name)
    rows = rows.set_index("name")
    assert rows.loc["good.png", "label"] in ("benign", "malignant")
    assert 0 <= float(rows.loc["good2.png", "malignant_probability"]) <= 1
    assert "too small" in rows.loc["tiny.png", "error"] and pd.isna(rows.loc["tiny.png", "malignant_probability"])


# --------------------------------------------------------------------------- export --calibration


def _calibration_folder(folder: Path, good: int, bad: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(good):
        lesion((48, 40), seed=100 + i).save(folder / f"img_{i:03d}.png")
    for i in range(bad):
        Image.new("RGB", (8, 8)).save(folder / f"small_{i:03d}.png")
    return folder


def test_export_int8_calibrates_on_a_folder_for_a_model_trained_elsewhere(models, tmp_path, capsys):
    from kd_utils.tools import deploy
    from kd_utils.__main__ import main

    folder = _calibration_folder(tmp_path / "calib", good=100, bad=3)
    target = tmp_path / "out" / "two_int8.tflite"
    code = main(["export", str(models["two"]), "--quantize", "int8", "--calibration", str(folder), "--out", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"int8 calibration: 100 images of {folder}; 3 file(s) refused" in out and "too small" in out
    assert "no evaluation on the test split" in err  # no manifest for the profile: nothing to compare on
    runner = deploy.load_model(target)
    assert runner.input_dtype == np.uint8 and runner.input_quantization == (1.0, 0)


def test_export_calibration_with_too_few_usable_images(models, tmp_path, capsys):
    from kd_utils.__main__ import main

    folder = _calibration_folder(tmp_path / "calib", good=90, bad=10)
    code = main(["export", str(models["two"]), "--quantize", "int8", "--calibration", str(folder),
                 "--out", str(tmp_path / "x.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x.tflite").exists()
    assert err.strip().splitlines()[-1].startswith(
        f"error: --calibration {folder}: 90 usable image(s) of 100 .jpg/.jpeg/.png file(s) (10 refused; e.g. ")
    assert "int8 calibration needs 100 to 500 images" in err


def test_export_int8_without_calibration_or_training_split_says_what_to_give(models, tmp_path, capsys):
    from kd_utils.__main__ import main

    assert main(["export", str(models["two"]), "--quantize", "int8", "--profile", "smoke",
                 "--out", str(tmp_path / "x.tflite")]) == 2
    err = capsys.readouterr().err
    assert "give --calibration DIR" in err and "01_data_preparation" in err


@pytest.mark.parametrize("model", ["three", "truncated"])
def test_export_refuses_a_damaged_or_non_two_class_model(models, tmp_path, capsys, model):
    from kd_utils.__main__ import main

    assert main(["export", str(models[model]), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert ("not a two-class model" if model == "three" else "damaged or not a Keras/TFLite model") in err
    assert not list(tmp_path.glob("*.tflite"))


# --------------------------------------------------------------------------- entry point


@pytest.mark.parametrize("raised, code, words", [
    (RuntimeError("boom"), 3, ["Traceback", "RuntimeError: boom", "internal error"]),
    (KeyboardInterrupt(), 130, ["interrupted"]),
    (__import__("kd_utils.storage").storage.RunLockedError("/a/run is being written by pid 42 on host h"), 2,
     ["error: /a/run is being written by pid 42"]),
    (__import__("kd_utils.data").data.DataError("manifest.csv does not match its manifest.json"), 2,
     ["error: manifest.csv does not match"]),
])
def test_entry_point_exit_codes_for_bugs_and_ctrl_c(monkeypatch, capsys, raised, code, words):
    import kd_utils.__main__ as cli

    def fail(args):
        raise raised

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.entry(["benchmark"]) == code
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert ("Traceback" in err) == (code == 3)
