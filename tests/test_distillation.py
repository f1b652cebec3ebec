import keras
import numpy as np
import pytest

from kd_utils import models
from kd_utils.distillation import Distiller, SoftKLDivergence
from kd_utils.evaluation import softmax


def reference_loss(y, s, t, alpha, T, t2=False):
    """Equation (5) in NumPy, float64."""
    hard = -np.mean(np.sum(y * np.log(softmax(s)), axis=1))
    soft = -np.mean(np.sum(softmax(t, T) * np.log(softmax(s, T)), axis=1))
    if t2:
        soft *= T * T
    return alpha * hard + (1 - alpha) * soft, hard, soft


def tiny_model(seed, name, batchnorm=False, dropout=0.0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = models.Preprocess("unit")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, size=n)]
    return x, y


def make_distiller(student, teacher, **kw):
    d = Distiller(student=student, teacher=teacher)
    d.compile(optimizer=keras.optimizers.SGD(0.01), metrics=[keras.metrics.CategoricalAccuracy()], **kw)
    return d


@pytest.mark.parametrize("t2", [False, True])
@pytest.mark.parametrize("alpha, T", [(0.1, 10.0), (0.5, 3.0), (0.0, 1.0)])
def test_loss_equals_numpy_equation_5(t2, alpha, T):
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t")
    x, y = batch()
    d = make_distiller(student, teacher, alpha=alpha, temperature=T, scale_by_t2=t2)
    logs = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    s = np.asarray(student(x), dtype=np.float64)
    t = np.asarray(teacher(x), dtype=np.float64)
    total, hard, soft = reference_loss(y, s, t, alpha, T, t2)
    # float32 arithmetic: 1e-6 absolute, or relative where T^2 makes the loss large.
    assert logs["loss"] == pytest.approx(total, rel=1e-6, abs=1e-6)
    assert logs["student_loss"] == pytest.approx(hard, rel=1e-6, abs=1e-6)
    assert logs["distillation_loss"] == pytest.approx(soft, rel=1e-6, abs=1e-6)
    assert logs["categorical_accuracy"] == pytest.approx(np.mean(s.argmax(1) == y.argmax(1)))


def test_train_step_reports_the_loss_it_optimised():
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t")
    x, y = batch()
    d = make_distiller(student, teacher, alpha=0.1, temperature=10.0)
    s = np.asarray(student(x), dtype=np.float64)
    total, _, _ = reference_loss(y, s, np.asarray(teacher(x), dtype=np.float64), 0.1, 10.0)
    logs = d.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(total, abs=1e-6)
    assert set(logs) == {"loss", "student_loss", "distillation_loss", "categorical_accuracy"}


def test_teacher_is_bit_identical_after_fit_and_only_student_learns():
    student = tiny_model(1, "s", dropout=0.2)
    teacher = tiny_model(2, "t", batchnorm=True, dropout=0.5)
    before_teacher = [w.copy() for w in teacher.get_weights()]
    before_student = [w.copy() for w in student.get_weights()]
    x, y = batch(64)
    d = make_distiller(student, teacher)
    assert {id(v) for v in d.trainable_variables} == {id(v) for v in student.trainable_variables}
    d.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(before_teacher, teacher.get_weights()):
        assert a.tobytes() == b.tobytes()  # bit-identical, batch-norm statistics included
    changed = [not np.array_equal(a, b) for a, b in zip(before_student, student.get_weights())]
    assert all(changed)


def test_gradients_reach_only_the_student_even_if_teacher_is_unfrozen():
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t", batchnorm=True)
    d = make_distiller(student, teacher)
    assert teacher.trainable is False
    teacher.trainable = True  # a user's mistake must not let the teacher learn
    before_teacher = [w.copy() for w in teacher.get_weights()]
    before_student = [w.copy() for w in student.get_weights()]
    x, y = batch()
    d.train_on_batch(x, y)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before_teacher, teacher.get_weights()))
    assert all(not np.array_equal(a, b) for a, b in zip(before_student, student.get_weights()))


def test_alpha_one_is_plain_supervised_training():
    x, y = batch(32)
    plain = tiny_model(5, "plain")
    plain.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    student = tiny_model(5, "student")
    d = Distiller(student=student, teacher=tiny_model(9, "t"))
    d.compile(optimizer=keras.optimizers.SGD(0.05), alpha=1.0, temperature=4.0)
    for _ in range(3):
        l_plain = plain.train_on_batch(x, y)
        l_kd = d.train_on_batch(x, y, return_dict=True)["loss"]
        assert l_kd == pytest.approx(float(l_plain), abs=1e-6)
    for a, b in zip(plain.get_weights(), student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_at_alpha_one_the_teachers_logits_leave_no_trace_in_the_weights():
    # The no-teacher baseline's run key leaves the teacher out (one baseline for every
    # teacher): that holds only if whatever logits ride along change no bit of the student.
    x, y = batch(32)
    rng = np.random.default_rng(3)
    weights = []
    for logits in (np.zeros((32, 2), np.float32), rng.normal(0, 20, (32, 2)).astype(np.float32)):
        student = tiny_model(5, "s", batchnorm=True)
        d = Distiller(student=student, teacher=None)
        d.compile(optimizer=keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9), alpha=1.0,
                  temperature=10.0, scale_by_t2=True)
        for _ in range(3):
            d.train_on_batch({"images": x, "teacher_logits": logits}, y)
        weights.append([w.tobytes() for w in student.get_weights()])
    assert weights[0] == weights[1]


def test_precomputed_teacher_logits_give_the_same_loss():
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t")
    x, y = batch()
    d = make_distiller(student, teacher)
    live = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    logits = np.asarray(teacher(x))
    cached = d.evaluate({"images": x, "teacher_logits": logits}, y, batch_size=16, return_dict=True, verbose=0)
    for key in ("loss", "student_loss", "distillation_loss"):
        assert cached[key] == pytest.approx(live[key], abs=1e-7)
    # Without a teacher the precomputed path still works, the live one explains.
    teacherless = make_distiller(tiny_model(1, "s2"), None)
    assert teacherless.evaluate({"images": x, "teacher_logits": logits}, y, verbose=0, return_dict=True)["loss"] > 0
    with pytest.raises(ValueError, match="no teacher"):
        teacherless.evaluate(x, y, verbose=0)


def test_kl_and_ce_soft_losses_differ_by_teacher_entropy():
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t")
    x, y = batch()
    T = 3.0
    ce = make_distiller(student, teacher, alpha=0.0, temperature=T).evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    kl = make_distiller(student, teacher, alpha=0.0, temperature=T, distillation_loss_fn=SoftKLDivergence()).evaluate(
        x, y, batch_size=16, return_dict=True, verbose=0
    )
    p = softmax(np.asarray(teacher(x), dtype=np.float64), T)
    entropy = -np.mean(np.sum(p * np.log(p), axis=1))
    assert ce["loss"] - kl["loss"] == pytest.approx(entropy, abs=1e-5)


def test_bad_hyper_parameters_are_refused():
    d = Distiller(student=tiny_model(1, "s"), teacher=tiny_model(2, "t"))
    with pytest.raises(ValueError, match="alpha must lie in"):
        d.compile(alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        d.compile(temperature=0)
    with pytest.raises(ValueError, match="must hold 'images'"):
        d.compile()
        d({"pixels": np.zeros((1, 8, 8, 3))})


def test_loss_config_says_which_equation():
    d = make_distiller(tiny_model(1, "s"), tiny_model(2, "t"), alpha=0.1, temperature=10, scale_by_t2=True)
    cfg = d.loss_config()
    assert cfg["scale_by_t2"] is True and cfg["temperature"] == 10.0 and "T^2" in cfg["equation"]


def test_saved_student_reloads_and_predicts_identically(tmp_path):
    student = models.build_dsnet(32)
    d = make_distiller(student, tiny_model(2, "t"))
    x = np.random.default_rng(3).integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    path = tmp_path / "dsnet.keras"
    d.save_student(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(student(x)))
    assert {l.name for l in reloaded.layers} == {l.name for l in student.layers}


@pytest.mark.parametrize("alpha", [1.0, 0.1])
def test_partial_batches_count_per_example_like_keras(alpha):
    """17 examples in batches of 16: every loss is the mean over the 17, not over two batch means."""
    x, y = batch(17, seed=3)
    plain = tiny_model(4, "plain")
    plain.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    teacher = tiny_model(6, "t")
    d = make_distiller(tiny_model(4, "student"), teacher, alpha=alpha, temperature=4.0)
    logs = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    s = np.asarray(d.student(x), dtype=np.float64)
    total, hard, soft = reference_loss(y, s, np.asarray(teacher(x), dtype=np.float64), alpha, 4.0)
    assert logs["student_loss"] == pytest.approx(hard, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(soft, rel=1e-5)
    assert logs["loss"] == pytest.approx(total, rel=1e-5)
    if alpha == 1.0:
        assert logs["loss"] == pytest.approx(plain.evaluate(x, y, batch_size=16, verbose=0), rel=1e-6)
    # Training too: one epoch over the 17 reports the per-example mean of the two steps' losses.
    history = d.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"][0])


def test_the_teacher_is_not_part_of_the_distillers_state():
    student, teacher = tiny_model(1, "s"), tiny_model(2, "t")
    d = make_distiller(student, teacher)
    assert d.teacher is teacher
    assert {id(v) for v in d.variables} == {id(v) for v in student.variables}
    assert {id(v) for v in d.weights} == {id(v) for v in student.weights}
