"""TFLite export, the .keras/.tflite runners, prediction on files and the export/predict commands."""

import io

import keras
import numpy as np
import pytest
from PIL import Image

from kd_utils import batches, config, data, evaluation, models, paths, synthetic
from kd_utils.experiments import pipeline
from kd_utils.tools import deploy, tflite_export
from kd_utils.__main__ import main

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A DSNet at 32 px fitted briefly on synthetic images (confident enough for argmax checks),
    saved as .keras, with its three TFLite exports; the int8 one calibrated on training images."""
    folder = tmp_path_factory.mktemp("deploy")
    keras.utils.set_random_seed(0)
    images, labels = synthetic.generate_arrays(48, SIZE, seed=0)
    model = models.build_dsnet(SIZE)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(images.astype("float32"), keras.utils.to_categorical(labels, 2), epochs=4, batch_size=32, verbose=0)
    keras_path = folder / "dsnet.keras"
    model.save(keras_path)
    tflite = {q: tflite_export.export_tflite(model, folder / f"dsnet_{q}.tflite", q, images) for q in tflite_export.QUANTIZATIONS}
    test_images, _ = synthetic.generate_arrays(16, SIZE, seed=1)
    samples = np.stack([batches.load_image(str(p), SIZE).numpy() for p in sorted(paths.sample_dir().glob("*.jpg"))])
    return {"model": model, "keras": keras_path, "tflite": tflite, "folder": folder,
            "images": np.concatenate([test_images, samples])}


def keras_logits(model, images):
    return np.asarray(model(np.asarray(images, dtype="float32"), training=False))


def test_float_tflite_gives_the_keras_logits(trained):
    runner = deploy.load_model(trained["tflite"]["none"])
    assert isinstance(runner, deploy.TFLiteRunner) and runner.image_size == SIZE
    assert runner.input_dtype == np.float32 and runner.output_dtype == np.float32
    expected = keras_logits(trained["model"], trained["images"])
    got = runner.predict_logits(trained["images"])
    assert got.shape == (len(trained["images"]), 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_quantized_exports_stay_close_to_keras(trained):
    expected = keras_logits(trained["model"], trained["images"])
    p_expected = evaluation.softmax(expected)[:, 1]
    dynamic = deploy.load_model(trained["tflite"]["dynamic"])
    int8 = deploy.load_model(trained["tflite"]["int8"])
    # Full integer: raw uint8 pixels go in unchanged (scale 1, zero point 0); int8 logits come out.
    assert int8.input_dtype == np.uint8 and int8.input_quantization == (1.0, 0)
    assert int8.output_dtype == np.int8 and int8.output_quantization[0] > 0
    assert dynamic.input_dtype == np.float32
    for runner, max_prob_error, min_agreement in ((dynamic, 0.02, 0.97), (int8, 0.08, 0.9)):
        logits = runner.predict_logits(trained["images"])
        p = evaluation.softmax(logits)[:, 1]
        agreement = np.mean(np.argmax(logits, 1) == np.argmax(expected, 1))
        assert np.max(np.abs(p - p_expected)) < max_prob_error, runner.path.name
        assert agreement >= min_agreement, (runner.path.name, agreement)


def test_int8_file_is_much_smaller_than_float(trained):
    sizes = {q: path.stat().st_size for q, path in trained["tflite"].items()}
    assert sizes["int8"] < 0.4 * sizes["none"]
    assert sizes["dynamic"] < 0.4 * sizes["none"]


def test_tflite_runner_takes_any_batch_size(trained):
    runner = deploy.load_model(trained["tflite"]["int8"])
    images = trained["images"]
    one_by_one = np.concatenate([runner.predict_logits(image) for image in images[:5]])  # a single image too
    np.testing.assert_array_equal(runner.predict_logits(images[:5]), one_by_one)
    many = np.resize(images, (70, SIZE, SIZE, 3))  # more than one internal chunk
    np.testing.assert_array_equal(runner.predict_logits(many, batch_size=64)[:5], one_by_one)
    assert runner.predict_logits(images[:0]).shape == (0, 2)
    with pytest.raises(ValueError, match=f"\\(n, {SIZE}, {SIZE}, 3\\)"):
        runner.predict_logits(np.zeros((2, SIZE + 1, SIZE, 3), np.uint8))


def test_keras_runner_reloads_the_saved_model(trained):
    runner = deploy.load_model(trained["keras"])
    assert isinstance(runner, deploy.KerasRunner) and runner.image_size == SIZE
    np.testing.assert_allclose(runner.predict_logits(trained["images"]),
                               keras_logits(trained["model"], trained["images"]), atol=1e-5)


def test_bad_quantize_and_missing_representative_data_are_clear_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="Unknown quantize='float16'.*none, dynamic, int8"):
        tflite_export.export_tflite(trained["model"], tmp_path / "x.tflite", "float16")
    with pytest.raises(ValueError, match="needs representative_images"):
        tflite_export.export_tflite(trained["model"], tmp_path / "x.tflite", "int8")
    with pytest.raises(ValueError, match="model's input size"):
        tflite_export.export_tflite(trained["model"], tmp_path / "x.tflite", "int8", np.zeros((4, 64, 64, 3), np.uint8))
    assert not (tmp_path / "x.tflite").exists()


def test_unknown_model_suffix_and_missing_file(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Unsupported model file .*model\.h5.*\.keras.*\.tflite"):
        deploy.load_model(tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        deploy.load_model(tmp_path / "missing.tflite")


def test_compare_on_split_reports_accuracy_auc_and_loss(trained, tmp_path):
    manifest = _manifest(tmp_path, per_class=12)
    table = deploy.compare_on_split(trained["keras"], list(trained["tflite"].values()), manifest, "test")
    assert list(table.model) == ["dsnet.keras", "dsnet_none.tflite", "dsnet_dynamic.tflite", "dsnet_int8.tflite"]
    assert list(table.format) == ["keras", "tflite", "tflite", "tflite"]
    assert (table.n == len(manifest.split("test"))).all()
    assert table.accuracy_loss.iloc[0] == 0 and table.accuracy_loss.iloc[1] == 0 and table.agreement.iloc[1] == 1
    assert np.allclose(table.accuracy_loss, table.accuracy.iloc[0] - table.accuracy)
    assert table.auc_malignant.between(0, 1).all() and table.accuracy.between(0, 1).all()


# --------------------------------------------------------------------------- prediction on files


def _manifest(folder, per_class):
    return data.build_manifest("synthetic", folder / "syn", image_size=SIZE, synthetic_per_class=per_class,
                               work_dir=folder / "converted")


@pytest.fixture()
def image_dir(tmp_path):
    """Good and bad files, as a user's folder might hold them."""
    folder = tmp_path / "images"
    folder.mkdir()
    source = paths.sample_dir() / "ISIC_0000046.jpg"
    with Image.open(source) as im:
        rgb = im.convert("RGB")
    rgb.resize((60, 45)).save(folder / "a_good.png")
    rgb.convert("L").save(folder / "b_gray.JPG", quality=90)
    rgba = rgb.copy()
    rgba.putalpha(200)
    rgba.save(folder / "c_rgba.png")
    rgb.resize((2600, 1950)).save(folder / "d_large.jpeg", quality=85)
    (folder / "e_text.jpg").write_text("this is not an image")
    jpeg = io.BytesIO()
    rgb.save(jpeg, format="JPEG", quality=95)
    (folder / "f_truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    sixteen = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "g_16bit.png")  # mode I;16
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "h_palette.png")
    (folder / "notes.txt").write_text("not picked up: not an image suffix")
    return folder


def test_predict_paths_reads_any_mode_and_reports_bad_files(trained, image_dir):
    model = trained["model"]
    results = deploy.predict_paths([image_dir, image_dir / "missing.png"], trained["keras"])
    names = [r.path.split("/")[-1] for r in results]
    assert names == ["a_good.png", "b_gray.JPG", "c_rgba.png", "d_large.jpeg", "e_text.jpg",
                     "f_truncated.jpg", "g_16bit.png", "h_palette.png", "missing.png"]
    by_name = dict(zip(names, results))
    for name in ("a_good.png", "b_gray.JPG", "c_rgba.png", "d_large.jpeg", "g_16bit.png", "h_palette.png"):
        result = by_name[name]
        assert result.ok and 0.0 <= result.malignant_probability <= 1.0
        # The same number as the model's own softmax on the training-time reader's pixels.
        pixels = batches.load_image(str(image_dir / name), SIZE).numpy()
        expected = evaluation.softmax(keras_logits(model, pixels[None]))[0, 1]
        assert result.malignant_probability == pytest.approx(expected, abs=1e-5), name
        assert result.label == ("malignant" if expected >= 0.5 else "benign")
    assert "not an image" in by_name["e_text.jpg"].error
    assert "truncated" in by_name["f_truncated.jpg"].error
    assert by_name["missing.png"].error == "file not found"
    assert all(r.malignant_probability is None for r in results if not r.ok)


def test_predict_gives_the_same_answer_with_keras_and_float_tflite(trained, image_dir):
    from_keras = deploy.predict_paths(image_dir, trained["keras"])
    from_tflite = deploy.predict_paths(image_dir, deploy.load_model(trained["tflite"]["none"]))
    for a, b in zip(from_keras, from_tflite):
        assert a.path == b.path and a.error == b.error
        if a.ok:
            assert a.malignant_probability == pytest.approx(b.malignant_probability, abs=1e-5)


def test_predict_command_prints_the_disclaimer_and_the_table(trained, image_dir, capsys):
    code = main(["predict", str(image_dir), "--model", str(trained["tflite"]["int8"])])
    out, err = capsys.readouterr()
    assert code == 1  # two of the files fail: the others are still printed
    assert "not a diagnostic device" in out and "must not be used for clinical decisions" in out
    assert "malignant_probability" in out and "a_good.png" in out
    assert "e_text.jpg" in err and "f_truncated.jpg" in err and "e_text.jpg" not in out
    assert "6 of 8 file(s) predicted" in out and "2 failed" in out


def test_predict_command_fails_when_any_file_fails(trained, image_dir, capsys):
    code = main(["predict", str(image_dir / "e_text.jpg"), str(image_dir / "nope.png"), "--model", str(trained["keras"])])
    out, err = capsys.readouterr()
    assert code == 1 and "not a diagnostic device" in out and "nope.png" in err
    assert main(["predict", str(image_dir), "--model", str(image_dir / "model.onnx")]) == 2
    assert "Unsupported model file" in capsys.readouterr().err


def test_predict_command_names_the_missing_step_without_a_model(image_dir, capsys):
    assert main(["predict", str(image_dir), "--profile", "smoke"]) == 2
    assert "notebooks/" in capsys.readouterr().err


def test_export_command_writes_every_variant_and_compares(trained, tmp_path, capsys):
    profile = config.get_profile("smoke")
    _manifest(tmp_path, per_class=12).save(paths.artifacts_dir(profile) / "data")
    assert pipeline.load_manifest(profile) is not None
    out_dir = tmp_path / "exported"
    code = main(["export", str(trained["keras"]), "--quantize", "all", "--profile", "smoke", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("dsnet_float32.tflite", "dsnet_dynamic_int8.tflite", "dsnet_int8.tflite"):
        assert (out_dir / name).is_file() and name in out
    assert "accuracy_loss" in out and "auc_malignant" in out and "MB" in out
    assert "int8 calibration" in out


def test_export_command_rejects_a_non_keras_model(trained, capsys):
    assert main(["export", str(trained["tflite"]["none"]), "--quantize", "none"]) == 2
    assert "MODEL must be a .keras file" in capsys.readouterr().err


@pytest.mark.parametrize("ending", ["activation", "layer"])
def test_a_model_that_ends_in_softmax_gives_its_own_probabilities(trained, image_dir, tmp_path, ending):
    """Its output is read as probabilities, not squashed by a second softmax."""
    base = trained["model"]
    out = keras.layers.Softmax()(base.output) if ending == "layer" else keras.layers.Activation("softmax")(base.output)
    probabilities = keras.Model(base.input, out)
    path = tmp_path / "with_softmax.keras"
    probabilities.save(path)
    results = deploy.predict_paths([image_dir / "a_good.png", image_dir / "d_large.jpeg"], path)
    pixels = np.stack([batches.load_image(str(image_dir / n), SIZE).numpy() for n in ("a_good.png", "d_large.jpeg")])
    expected = np.asarray(probabilities(pixels.astype("float32")))[:, 1]
    assert [r.malignant_probability for r in results] == pytest.approx(expected, abs=1e-5)
    assert deploy.ends_in_softmax(probabilities) and not deploy.ends_in_softmax(base)
    dense = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    assert deploy.ends_in_softmax(dense)
    # The same model as a .tflite file: its last operation is a softmax, read as probabilities too.
    tflite = tflite_export.export_tflite(probabilities, tmp_path / "with_softmax.tflite", "none")
    results = deploy.predict_paths([image_dir / "a_good.png", image_dir / "d_large.jpeg"], tflite)
    assert [r.malignant_probability for r in results] == pytest.approx(expected, abs=1e-4)
    assert not deploy.load_model(trained["tflite"]["none"]).probabilities  # logits stay logits


def test_export_writes_all_of_its_files_or_none(trained, tmp_path, monkeypatch, capsys):
    """A failure after the first .tflite was converted (here: the comparison on
    the test split) leaves no exported file, no card and no temporary folder."""
    profile = config.get_profile("smoke")
    _manifest(tmp_path, per_class=12).save(paths.artifacts_dir(profile) / "data")
    out_dir = tmp_path / "exported"
    out_dir.mkdir()

    def fails(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy, "compare_on_split", fails)
    with pytest.raises(KeyboardInterrupt):
        main(["export", str(trained["keras"]), "--quantize", "none", "dynamic", "--profile", "smoke",
              "--out", str(out_dir)])
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_export_refuses_a_run_whose_test_predictions_are_damaged(trained, tmp_path, capsys):
    """The record's checksums cover the test predictions the model card reads:
    cut short, they stop the export in one line before anything is written."""
    import shutil

    from kd_utils import training

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(trained["keras"], run / "best.keras")
    np.savez(run / "test_predictions.npz", labels=np.array([0, 1]), logits=np.zeros((2, 2), np.float32))
    training.save_record(run, {"config": {"model": "dsnet"}}, "k")
    predictions = run / "test_predictions.npz"
    predictions.write_bytes(predictions.read_bytes()[:40])
    code = main(["export", str(run / "best.keras"), "--quantize", "none", "--profile", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "test_predictions.npz does not match the checksum" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == ["best.keras", "record.json", "test_predictions.npz"]


def test_colour_constancy_travels_into_the_tflite_export(tmp_path):
    """A model with Shades of Gray first: the .tflite file applies it too, so
    its logits on a colour-cast image are the Keras model's."""
    keras.utils.set_random_seed(0)
    model = models.build_dsnet(SIZE, color_constancy=True)
    path = tflite_export.export_tflite(model, tmp_path / "sog.tflite", "none")
    images = np.random.default_rng(2).integers(0, 256, size=(4, SIZE, SIZE, 3)).astype(np.uint8)
    images[..., 0] = np.minimum(255, images[..., 0].astype(int) * 5 // 4)  # a red cast
    expected = np.asarray(model(images.astype(np.float32)))
    np.testing.assert_allclose(deploy.load_model(path).predict_logits(images), expected, atol=1e-4)
