"""Knowledge distillation (Hinton et al. 2015) as the paper states it.

With teacher logits ``t``, student logits ``s``, one-hot labels ``y``,
temperature ``T`` and weight ``alpha`` the paper's equation (5) is::

    loss = alpha * CE(y, softmax(s)) + (1 - alpha) * CE(softmax(t / T), softmax(s / T))

Hinton et al. multiply the soft term by ``T**2`` so that its gradients keep
their size when ``T`` changes; the paper does not, so that is off by default
(``scale_by_t2=True`` turns it on). Every record carries
:meth:`Distiller.loss_config` so it is always clear which was used.

Loss function conventions, so that any Keras loss can be plugged in:

* ``student_loss_fn(y, student_logits)`` - e.g.
  ``keras.losses.CategoricalCrossentropy(from_logits=True)``;
* ``distillation_loss_fn(soft_targets, student_logits / T)`` where
  ``soft_targets = softmax(teacher_logits / T)`` - the default
  ``CategoricalCrossentropy(from_logits=True)`` gives the paper's soft term;
  :class:`SoftKLDivergence` gives the KL form (same gradients, the loss value
  is lower by the teacher's entropy).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

IMAGES_KEY = "images"
TEACHER_LOGITS_KEY = "teacher_logits"


@keras.saving.register_keras_serializable(package="kd_utils")
class SoftKLDivergence(keras.losses.Loss):
    """KL(p || softmax(logits)) with ``p`` a probability vector and logits as y_pred."""

    def __init__(self, name="soft_kl_divergence", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        log_q = ops.log_softmax(y_pred, axis=-1)
        log_p = ops.log(ops.maximum(y_true, keras.config.epsilon()))
        return ops.sum(ops.where(y_true > 0, y_true * (log_p - log_q), 0.0), axis=-1)


def split_inputs(x):
    """``(images, teacher_logits or None)`` from a batch's inputs.

    Inputs are either an image tensor or a dict with ``"images"`` and,
    optionally, precomputed ``"teacher_logits"``.
    """
    if isinstance(x, dict):
        if IMAGES_KEY not in x:
            raise ValueError(
                f"A dict batch must hold {IMAGES_KEY!r} (and optionally {TEACHER_LOGITS_KEY!r}); "
                f"got keys {sorted(x)}."
            )
        return x[IMAGES_KEY], x.get(TEACHER_LOGITS_KEY)
    return x, None


class Distiller(keras.Model):
    """Trains ``student`` to match labels and the softened ``teacher``.

    The teacher is frozen (``trainable = False``, always called with
    ``training=False``), so its weights, batch-norm statistics included, are
    unchanged by ``fit``. Only the student's variables get gradients.
    Calling the distiller runs the student: ``distiller(images)`` are the
    student's logits.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        # Not tracked by Keras: the frozen teacher is no part of this model's
        # state, so checkpoints and saved weights hold the student only.
        object.__setattr__(self, "_teacher", teacher)
        if teacher is not None:
            teacher.trainable = False
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        # The student holds all the state: a built student makes a built
        # distiller, whose fit then has nothing left to build.
        self.built = bool(student.built)

    @property
    def teacher(self) -> keras.Model | None:
        return self._teacher

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha: float = 0.1,
        temperature: float = 10.0,
        scale_by_t2: bool = False,
        **kwargs,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.student_loss_fn = student_loss_fn or keras.losses.CategoricalCrossentropy(from_logits=True)
        self.distillation_loss_fn = distillation_loss_fn or keras.losses.CategoricalCrossentropy(
            from_logits=True
        )
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.scale_by_t2 = bool(scale_by_t2)

    def loss_config(self) -> dict:
        """What the loss was: to be stored with every result."""
        return {
            "alpha": self.alpha,
            "temperature": self.temperature,
            "scale_by_t2": self.scale_by_t2,
            "student_loss": type(self.student_loss_fn).__name__,
            "distillation_loss": type(self.distillation_loss_fn).__name__,
            "equation": "alpha*CE(y,s) + (1-alpha)*"
            + ("T^2*" if self.scale_by_t2 else "")
            + "soft(softmax(t/T), s/T)",
        }

    def call(self, inputs, training=False):
        images, _ = split_inputs(inputs)
        return self.student(images, training=training)

    def teacher_logits(self, images, precomputed=None):
        if precomputed is not None:
            return ops.cast(precomputed, "float32")
        if self.teacher is None:
            raise ValueError(
                "This Distiller has no teacher: pass the teacher model, or feed batches as "
                f"{{'{IMAGES_KEY}': ..., '{TEACHER_LOGITS_KEY}': ...}} with precomputed logits."
            )
        return ops.cast(self.teacher(images, training=False), "float32")

    def compute_losses(self, y, student_logits, teacher_logits, sample_weight=None):
        """``(total, student_loss, distillation_loss)`` of equation (5)."""
        student_logits = ops.cast(student_logits, "float32")
        t = self.temperature
        student_loss = self.student_loss_fn(y, student_logits, sample_weight=sample_weight)
        soft_targets = ops.softmax(teacher_logits / t, axis=-1)
        distillation_loss = self.distillation_loss_fn(
            soft_targets, student_logits / t, sample_weight=sample_weight
        )
        if self.scale_by_t2:
            distillation_loss = distillation_loss * (t * t)
        total = self.alpha * student_loss + (1.0 - self.alpha) * distillation_loss
        return total, student_loss, distillation_loss

    def _update_metrics(self, y, student_logits, losses, sample_weight):
        """Every loss is a per-example mean: each batch counts with its size, as
        Keras' own loss tracker does, so a last, smaller batch is not over-weighted."""
        # Under a tf.distribute strategy Keras losses come divided by the number
        # of replicas (so that summed gradients are those of the global mean);
        # the metrics report the per-example loss.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total, student_loss, distillation_loss = (value * replicas for value in losses)
        batch_size = ops.shape(student_logits)[0]
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch_size)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch_size)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(total, sample_weight=batch_size)
            elif metric not in (self.student_loss_tracker, self.distillation_loss_tracker):
                metric.update_state(y, student_logits, sample_weight=sample_weight)
        return self.get_metrics_result()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images, precomputed = split_inputs(x)
        teacher_logits = tf.stop_gradient(self.teacher_logits(images, precomputed))
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            student_logits = self.student(images, training=True)
            losses = self.compute_losses(y, student_logits, teacher_logits, sample_weight)
            total = losses[0]
            if self.student.losses:  # regularisation, split like the data losses
                total = total + ops.sum(self.student.losses) / tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total) if hasattr(self.optimizer, "scale_loss") else total
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(y, student_logits, losses, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images, precomputed = split_inputs(x)
        teacher_logits = self.teacher_logits(images, precomputed)
        student_logits = self.student(images, training=False)
        losses = self.compute_losses(y, student_logits, teacher_logits, sample_weight)
        return self._update_metrics(y, student_logits, losses, sample_weight)

    def save_student(self, path) -> None:
        """Save only the student (``.keras``); the teacher is not needed to deploy."""
        self.student.save(path)



def gradient_norms(student: keras.Model, images, labels, teacher_logits, temperature: float, alpha: float = 0.1,
                   scale_by_t2: bool = False) -> dict:
    """How hard each term of equation (5) pulls on the student, on one batch.

    ``label``: the norm of the gradient of ``alpha * CE(y, s)`` with respect to
    the student's trainable variables (all concatenated); ``soft``: the same for
    ``(1 - alpha) * [T^2 *] CE(softmax(t / T), softmax(s / T))``; ``ratio`` =
    soft / label. Without the T^2 factor the soft gradient falls about as
    1 / T^2 for large T, so at the paper's T = 10 to 100 the teacher barely
    enters the update; with it the two terms keep comparable sizes.
    """
    labels = ops.cast(labels, "float32")
    soft_targets = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)
    variables = student.trainable_variables
    norms = {}
    for term in ("label", "soft"):
        with tf.GradientTape() as tape:
            logits = ops.cast(student(images, training=False), "float32")
            if term == "label":
                loss = alpha * ce(labels, logits)
            else:
                loss = (1.0 - alpha) * ce(soft_targets, logits / temperature)
                if scale_by_t2:
                    loss = loss * temperature * temperature
        grads = [g for g in tape.gradient(loss, variables) if g is not None]
        norms[term] = float(ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads)))
    norms["ratio"] = norms["soft"] / norms["label"] if norms["label"] > 0 else float("inf")
    return norms
