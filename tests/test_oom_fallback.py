"""Runs that do not fit in memory fall back to micro-batches with gradient accumulation.

Out of memory is simulated for real on the CPU: a patched training step
asks for a tensor of 32 TB when its batch holds more than ``limit`` images,
and TensorFlow raises ``ResourceExhaustedError`` from inside the compiled
step, as a GPU does.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_utils import config, models, training
from kd_utils.experiments import memory, pipeline, runs
from kd_utils.distillation import Distiller


@pytest.fixture(scope="module")
def tiny(tiny_manifest):
    # Graph mode (smoke alone runs eagerly): the error must come out of a traced step, as on a GPU.
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1,), student_epochs=1,
                                 run_eagerly=False)
    return profile, tiny_manifest


def dsnet_teacher(seed=0):
    keras.utils.set_random_seed(seed)
    return models.build_dsnet(32)


def out_of_memory_above(monkeypatch, limit):
    """Every Distiller training step on more than ``limit`` images runs out of memory
    (pass a ``pytest.MonkeyPatch.context()`` to lift it again: undoing the test's
    own monkeypatch would also undo its isolated artifacts folder)."""
    original = Distiller.train_step

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        rows = tf.where(tf.shape(y)[0] > limit, tf.constant(2**23, tf.int64), tf.constant(1, tf.int64))
        huge = tf.fill(tf.stack([rows, tf.constant(2**20, tf.int64)]), y[0, 0])  # 32 TB of float32
        return original(self, (x, y + 0.0 * huge[:1, :1]))

    monkeypatch.setattr(Distiller, "train_step", train_step)


def student_key(profile, manifest, teacher):
    return runs.student_run(profile, manifest.content_hash, runs.teacher_key(teacher))[:2]


def test_the_fake_raises_what_a_gpu_raises(tiny, monkeypatch):
    out_of_memory_above(monkeypatch, 8)
    distiller = Distiller(student=models.build_dsnet(32), teacher=dsnet_teacher())
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=[keras.metrics.CategoricalAccuracy()])
    images, labels = np.zeros((16, 32, 32, 3), np.uint8), np.eye(2, dtype=np.float32)[[0, 1] * 8]
    with pytest.raises(tf.errors.ResourceExhaustedError) as caught:
        distiller.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert memory.is_out_of_memory(caught.value)
    distiller.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # 8 fits


def test_out_of_memory_falls_back_to_accumulated_micro_batches(tiny, capsys):
    profile, manifest = tiny
    teacher = dsnet_teacher()
    with pytest.MonkeyPatch.context() as patch:
        out_of_memory_above(patch, 8)
        _, record = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    assert record["batching"] == {"micro_batch": 8, "accumulation_steps": 4, "effective_batch": 32,
                                  "out_of_memory_at": [32, 16]}
    key, run_dir = student_key(profile, manifest, teacher)
    assert record["key"] == key and record["run_dir"] == str(run_dir)  # the same run: its key did not change
    assert record["config"]["batch_size"] == 32 and len(record["history"]["loss"]) == 1
    out = capsys.readouterr().out
    assert "out of memory at micro-batch 32" in out and "out of memory at micro-batch 16" in out
    assert "trained with micro-batches of 8 x 4 accumulation steps (effective batch 32)" in out
    # Asked again (no memory problem now), the finished run is loaded, not trained.
    _, again = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    assert again["key"] == key and again["batching"]["micro_batch"] == 8


def test_a_run_that_fits_records_its_full_batch(tiny):
    profile, manifest = tiny
    _, record = pipeline.distill_student(profile, manifest, dsnet_teacher(1), alpha=1.0, verbose=0)
    assert record["batching"] == {"micro_batch": 32, "accumulation_steps": 1, "effective_batch": 32,
                                  "out_of_memory_at": []}


def test_a_resumed_run_keeps_its_micro_batch(tiny, capsys):
    profile, manifest = tiny
    profile = profile.replace(student_epochs=2)
    teacher = dsnet_teacher(2)

    def killed_after_the_first_epoch(path, history):
        raise KeyboardInterrupt  # after progress.json of epoch 1 was written

    with pytest.MonkeyPatch.context() as patch:
        out_of_memory_above(patch, 8)
        patch.setattr(training, "_write_history_csv", killed_after_the_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            pipeline.distill_student(profile, manifest, teacher, verbose=0)
    _, run_dir = student_key(profile, manifest, teacher)
    progress = json.loads((run_dir / training.STATE_DIR / training.PROGRESS_FILE).read_text())
    assert progress["batching"] == {"micro_batch": 8, "accumulation_steps": 4, "effective_batch": 32}
    capsys.readouterr()  # memory is plentiful now: the run still resumes with its micro-batch
    _, record = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    assert "resuming" in capsys.readouterr().out
    assert record["batching"]["micro_batch"] == 8 and record["batching"]["out_of_memory_at"] == []
    assert len(record["history"]["loss"]) == 2


def test_at_the_floor_a_clear_error_is_raised(tiny, monkeypatch):
    profile, manifest = tiny
    out_of_memory_above(monkeypatch, 2)
    with pytest.raises(memory.OutOfMemoryError, match=r"batch 16 even with micro-batches of 4 \(tried 16, 8, 4"):
        pipeline.distill_student(profile.replace(batch_size=16), manifest, dsnet_teacher(3), verbose=0)


def test_other_errors_are_not_taken_for_out_of_memory():
    assert memory.is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"))
    assert memory.is_out_of_memory(tf.errors.InternalError(None, None, "Dst tensor is not initialized."))
    assert memory.is_out_of_memory(tf.errors.UnknownError(None, None, "CUDNN_STATUS_ALLOC_FAILED"))
    assert not memory.is_out_of_memory(tf.errors.InternalError(None, None, "Blas GEMM launch failed"))
    assert not memory.is_out_of_memory(tf.errors.InvalidArgumentError(None, None, "out of memory"))
    assert not memory.is_out_of_memory(MemoryError())


@pytest.mark.parametrize("batch, micro_batches", [(64, [64, 32, 16, 8, 4]), (18, [18, 9]), (96, [96, 48, 24, 12, 6]),
                                                  (5, [5])])
def test_micro_batches_halve_and_always_divide_the_batch(batch, micro_batches):
    batching, seen = memory.Batching(batch, batch), []
    while batching is not None:
        seen.append(batching.micro_batch)
        assert batching.micro_batch * batching.accumulation_steps == batch
        batching = batching.smaller()
    assert seen == micro_batches
