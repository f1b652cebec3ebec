"""Run profiles and paths.

Five profiles share one code path and differ only in scale:

* ``paper`` - Colab GPU, the real ISIC images, 224 px, ImageNet weights and
  the paper's epochs and sweeps.
* ``colab`` - ``paper`` cut to fit one Colab T4 session (:data:`COLAB_CHANGES`
  says exactly what differs).
* ``kaggle-cpu`` - a laptop without GPU on the paper's own Kaggle images:
  small images, no pretrained weights (none can be downloaded offline), the
  paper's pooled 70/30 split, a teacher that sees larger images than its
  students, five paired seeds.
* ``kaggle-cpu-robust`` - ``kaggle-cpu`` with every model trained on views
  that break the dataset's frame and exposure shortcuts, colour constancy
  inside the models (:data:`ROBUST_CHANGES`).
* ``cpu``   - a machine without GPU and without the real images: generated
  lesions, small images, no pretrained weights, a few epochs.
* ``smoke`` - continuous integration: the smallest run that still exercises
  every code path.

``paper-dry-run`` (:func:`dry_run_profile`) is ``paper`` at the smallest
scale, on stand-ins made locally: its code path (224 px, every backbone's
weights loaded from a file, a folder data source) without a download.

Environment variables (read when a profile is resolved, never at import):

* ``KD_PROFILE``   - default profile name (``paper``, ``colab``, ``kaggle-cpu``,
  ``cpu``, ``smoke`` or ``paper-dry-run``).
* ``KD_DATA_DIR``  - where datasets are downloaded / generated
  (default ``<root>/data``).
* ``KD_ARTIFACTS`` - where models, logs and records go
  (default ``<root>/artifacts``); on Colab this may point at Drive.
* ``KD_RESULTS``   - where tables, figures and executed notebooks go
  (default ``<root>/results``); on Colab this may point at Drive.
* ``KD_SEEDS``, ``KD_STUDENTS`` - what a notebook's empty ``SEEDS`` /
  ``STUDENTS`` parameter means instead of the profile's (``"10"``,
  ``"EfficientNetB0"``): how CI runs the notebooks with one seed.
* ``KD_ROOT``      - the project folder, e.g. the checkout when the package
  is installed from it non-editably (Colab); see :func:`repo_root`.

``<root>`` is :func:`repo_root`: the checkout when there is one, else
``./kd-melanoma/`` in the working directory - never the installed package's
folder and never ``notebooks/``. Relative paths in the variables are
resolved from it, not from the working directory, so notebooks (which run
inside ``notebooks/``) and the command line see the same folders.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

#: Where the project lives on GitHub: the notebooks' Colab badges and install
#: cells use this URL (a test checks they agree). Forks change it here.
REPO_URL = "https://github.com/kd-melanoma/kd-melanoma"


#: Where data, artifacts and results go when there is no checkout (a plain
#: ``pip install``) and no ``KD_ROOT``: this folder in the working directory.
INSTALLED_ROOT_NAME = "kd-melanoma"


def _is_checkout(folder: Path) -> bool:
    """A clone of this project: its ``pyproject.toml`` names it and ``kd_utils/`` is there."""
    project = folder / "pyproject.toml"
    if not (project.is_file() and (folder / "kd_utils").is_dir()):
        return False
    try:
        return 'name = "kd-melanoma"' in project.read_text()
    except OSError:
        return False


def repo_root() -> Path:
    """The project folder, which holds ``data/``, ``artifacts/`` and ``results/``.

    In order: ``$KD_ROOT``; the checkout this package sits in (run from a
    clone, or an editable install); the checkout the working directory lies
    in (an installed copy used from inside a clone, e.g. from its
    ``notebooks/``); else ``./kd-melanoma`` in the working directory (a plain
    ``pip install`` without a clone). Nothing is created here: the folders
    appear when something is written to them.
    """
    if os.environ.get("KD_ROOT"):
        return Path(os.environ["KD_ROOT"]).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    if _is_checkout(here):
        return here
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_checkout(folder):
            return folder
    return cwd / INSTALLED_ROOT_NAME


def installed_sample_dir() -> Path:
    """Where a wheel puts the sample: ``kd_utils/sample`` (pyproject's ``package-dir``)."""
    return Path(__file__).resolve().parent / "sample"


def sample_dir() -> Path:
    """The bundled 24-image CC0 ISIC sample: the checkout's ``data/sample``,
    else the copy installed with the package; an error that says so otherwise."""
    in_root = repo_root() / "data" / "sample"
    for folder in (in_root, installed_sample_dir()):
        if (folder / "labels.csv").is_file():
            return folder
    raise FileNotFoundError(
        f"The 24-image sample is neither in {in_root} nor installed with the package "
        f"({installed_sample_dir()}): this installation of kd_utils does not carry data/sample. "
        f"Install kd-melanoma from a wheel or clone of {REPO_URL} (both carry it), or set KD_ROOT "
        "to a clone."
    )


PROFILE_NAMES = ("paper", "kaggle-cpu", "kaggle-cpu-robust", "cpu", "smoke", "colab")
#: The profile that runs on the real Kaggle images without a GPU.
REAL_CPU = "kaggle-cpu"

#: The six keras.applications students of the paper's Table 2.
PRETRAINED_STUDENTS = (
    "MobileNet",
    "VGG16",
    "InceptionV3",
    "EfficientNetB0",
    "ResNet50",
    "ResNet101",
)


#: ``Profile.split``: re-split the pooled images, or keep the dataset's own folders.
SPLIT_MODES = ("pooled", "folders")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Every knob a run depends on. Frozen: derive variants with ``replace``."""

    name: str
    #: ``synthetic``, ``folder``, ``isic`` or ``sample`` (see ``kd_utils.data``).
    data_source: str
    image_size: int
    #: Initial weights of the keras.applications backbones: ``"imagenet"``
    #: (downloaded by Keras), ``None`` (random) or a folder holding the
    #: ImageNet weight files under the names Keras gives them
    #: (:data:`kd_utils.models.WEIGHTS_FILES`).
    weights: str | None
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    #: Paper's alpha: weight of the hard-label term in equation (5).
    alpha: float
    #: Temperature used for the main DSNet distillation and the six students.
    temperature: float
    #: The temperature sweep of Table 1.
    temperatures: tuple[float, ...]
    #: The batch-size sweep of Table 6.
    batch_sizes: tuple[int, ...]
    #: Adam learning rate for the keras.applications backbones (fine-tuning).
    lr_backbone: float
    #: Adam learning rate for DSNet (the paper's text).
    lr_dsnet: float
    #: Images per class generated by the ``synthetic`` source.
    synthetic_per_class: int
    #: Epochs of the six keras.applications students (paper: 20, as DSNet).
    backbone_student_epochs: int = 20
    #: Fraction of the training split held out for validation.
    val_fraction: float = 0.2
    #: Fraction of the data used for test when the split is made here (``split``).
    test_fraction: float = 0.3
    #: What happens to a source that brings its own train/test folders (the
    #: Kaggle set): ``"pooled"`` pools every image and re-splits them,
    #: stratified and seeded, ``test_fraction`` for test (the paper's 70/30:
    #: 6,996 / 3,000 of 9,996); ``"folders"`` keeps the dataset's own folders.
    #: Sources without their own split (synthetic, isic, sample, a flat
    #: folder) are split stratified either way.
    split: str = "pooled"
    seed: int = 10
    #: Seeds of the repeated student runs: every table reports their mean and
    #: standard deviation. ``seed`` above fixes the data split and the teacher.
    seeds: tuple[int, ...] = (10, 11, 12)
    #: Values of alpha tried at the chosen temperature (chosen on validation).
    alphas: tuple[float, ...] = (0.1, 0.5)
    #: Remove test images that (near-)duplicate a training image when the
    #: source brings its own test split (a random split keeps them together).
    remove_test_duplicates: bool = True
    #: GPU only: float16 compute with float32 variables (``mixed_float16``).
    mixed_precision: bool = False
    #: GPU only: compile the train step with XLA.
    jit_compile: bool = False
    #: TensorBoard logs (per-epoch scalars) in every run folder's ``tensorboard/``.
    tensorboard: bool = True
    #: Run the training, validation and prediction steps eagerly
    #: (``compile(run_eagerly=True)``) instead of tracing them into
    #: tf.functions. The same computation; worth it only for runs of a few
    #: batches, where tracing is most of a run's time (``smoke`` and the
    #: paper profile's dry run). The profiles that give results stay in
    #: graph mode.
    run_eagerly: bool = False
    #: The keras.applications students of Table 2 that notebook 05 trains
    #: (EfficientNetB0 is needed by Table 5).
    students: tuple[str, ...] = PRETRAINED_STUDENTS
    #: An offline stand-in for the ImageNet pretraining the paper's teacher
    #: starts from (profiles without ImageNet weights): before the profile's
    #: training split, the teacher trains for ``teacher_pretrain_epochs`` on
    #: this many generated images per class, drawn with another generator seed
    #: than the profile's data (none of them is in its splits). 0: none.
    teacher_pretrain_per_class: int = 0
    teacher_pretrain_epochs: int = 1
    #: Learning rate of the teacher on the profile's training split after that
    #: pretraining (fine-tuning); None: ``lr_backbone``.
    teacher_finetune_lr: float | None = None
    #: Momentum of the teacher's batch-norm moving statistics; None: Keras'
    #: 0.99, which over a few hundred steps from scratch lags far behind the
    #: weights (validation accuracy stuck at chance while training climbs).
    teacher_bn_momentum: float | None = None
    #: The teacher's input size when it differs from the students'
    #: (``image_size``): the teacher is trained, evaluated and its logits
    #: computed on each image resized to this size, while each student sees
    #: the same image at ``image_size``. A teacher that sees more detail than
    #: its student has more to pass on (precomputed logits make this possible;
    #: ``keras.distillation`` needs one input shape). None: ``image_size``.
    teacher_image_size: int | None = None
    #: Train the teacher on flipped and turned copies of its images (the
    #: square's eight symmetries, :func:`kd_utils.batches.dihedral`), drawn anew
    #: every epoch. Its logits for the students are computed on the images as
    #: they are, which is what the students see.
    teacher_augment: bool = False
    #: Train the teacher (``robust_teacher``) or the students
    #: (``robust_students``) on views that break the dataset's shortcuts:
    #: the symmetries plus zoom in and out, black fields, dark corners and
    #: intensity, contrast and hue jitter, for both classes alike
    #: (:func:`kd_utils.batches.robust_view`). The teacher's logits stay those
    #: of the images as they are: a soft label per image, not per view.
    robust_teacher: bool = False
    robust_students: bool = False
    #: Every model starts with colour constancy (Shades of Gray, p = 6,
    #: :class:`kd_utils.models.ShadesOfGray`), which travels with the model
    #: into ``predict``, ``evaluate`` and the TFLite export.
    color_constancy: bool = False
    #: The data source's folder; ``None``: the source's default in ``$KD_DATA_DIR``.
    data_root: str | None = None
    #: The data folder and the weights files are stand-ins that
    #: :mod:`kd_utils.dry_run` generates when missing (``paper-dry-run``).
    stand_ins: bool = False

    def __post_init__(self):
        counts = {"teacher_epochs": self.teacher_epochs, "student_epochs": self.student_epochs,
                  "teacher_pretrain_epochs": self.teacher_pretrain_epochs,
                  "backbone_student_epochs": self.backbone_student_epochs, "batch_size": self.batch_size}
        for field, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a whole number of at least 1, got {value!r}.")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed.")
        unknown = [s for s in self.students if s not in PRETRAINED_STUDENTS]
        if unknown or "EfficientNetB0" not in self.students:
            raise ValueError(f"students must be some of {', '.join(PRETRAINED_STUDENTS)}, EfficientNetB0 among them "
                             f"(Table 5); got {', '.join(self.students) or 'none'}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}.")
        if not isinstance(self.teacher_pretrain_per_class, int) or self.teacher_pretrain_per_class < 0:
            raise ValueError("teacher_pretrain_per_class must be a whole number >= 0 (0: no pretraining), "
                             f"got {self.teacher_pretrain_per_class!r}.")
        if self.teacher_bn_momentum is not None and not 0.0 < self.teacher_bn_momentum < 1.0:
            raise ValueError(f"teacher_bn_momentum must lie in (0, 1) or be None, got {self.teacher_bn_momentum!r}.")
        size = self.teacher_image_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < self.image_size):
            raise ValueError(f"teacher_image_size must be None or a whole number of at least image_size "
                             f"({self.image_size}), got {size!r}.")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLIT_MODES))} (pooled: re-split all images "
                             f"70/30 as the paper; folders: keep the dataset's own train/test folders), "
                             f"got {self.split!r}.")

    def replace(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)

    @property
    def teacher_size(self) -> int:
        """The teacher's input size (:attr:`teacher_image_size`, else :attr:`image_size`)."""
        return self.teacher_image_size or self.image_size

    def teacher_view(self) -> "Profile":
        """This profile as the teacher sees it: ``image_size`` is :attr:`teacher_size`."""
        return self if self.teacher_size == self.image_size else self.replace(image_size=self.teacher_size)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        data_source="folder",
        image_size=224,
        weights="imagenet",
        teacher_epochs=10,
        student_epochs=20,
        batch_size=64,
        alpha=0.1,
        temperature=10.0,
        temperatures=(1, 3, 5, 7, 10, 20, 50, 70, 90, 100),
        batch_sizes=(18, 32, 64, 96),
        lr_backbone=1e-4,
        lr_dsnet=1e-3,
        synthetic_per_class=5000,
        seeds=(10, 11, 12),
        alphas=(0.1, 0.3, 0.5),
        split="pooled",  # the paper's 70/30 re-split of all images, not the Kaggle folders
    ),
    "cpu": Profile(
        name="cpu",
        data_source="synthetic",
        # 64 px: InceptionV3 (75 px at least) is not among this profile's students.
        image_size=64,
        weights=None,
        teacher_epochs=2,
        student_epochs=6,
        batch_size=64,
        alpha=0.1,
        temperature=10.0,
        temperatures=(1, 3, 10, 50),
        batch_sizes=(32, 64),
        lr_backbone=1e-3,
        lr_dsnet=1e-3,
        # A small labelled set, as in medical imaging: what the teacher learnt
        # elsewhere (below) is what distillation can pass on. 2 x 600 images,
        # 60% of them for test (720: tight test estimates), 30% of the rest
        # for validation (144), leaving 336 to train on. With 672 training
        # images DSNet alone came within about 1 point of the teacher (0.816
        # against 0.828), too close to tell whether a teacher passes anything
        # on. (The teacher leads the 6-epoch DSNet; DSNet given 18 epochs on
        # the 336 images passes it: see the README.)
        synthetic_per_class=600,
        test_fraction=0.6,
        val_fraction=0.3,
        # The offline stand-in for ImageNet: the teacher first learns from
        # 2 x 2,500 generated lesions outside the profile's data (learning
        # rate decayed to 0 over 2 epochs), then from its training split at a
        # lower rate (see pipeline.pretrain_teacher).
        teacher_pretrain_per_class=2500,
        teacher_pretrain_epochs=2,
        teacher_finetune_lr=1e-4,
        teacher_bn_momentum=0.9,
        # From scratch, one epoch: the large students only show that their
        # path runs (they stay near chance). Two of the six keep the run
        # under an hour; the paper profile and its dry run build all six.
        students=("MobileNet", "EfficientNetB0"),
        backbone_student_epochs=1,
    ),
    "kaggle-cpu": Profile(
        name="kaggle-cpu",
        # The paper's Kaggle images (``python -m kd_utils download``, or
        # KD_DATA_DIR naming a folder that holds melanoma_cancer_dataset/),
        # pooled and re-split 70/30 as the paper did; near-copies stay on one
        # side of every split (notebook 01 reports them).
        data_source="folder",
        split="pooled",
        # Students see 32 px, the teacher 64 px. DSNet from scratch reached
        # 0.905 validation accuracy at 32 px, as at 64 px (0.906), where a
        # ResNet50 teacher led it by only about 1.5 points: the teacher's
        # larger view, trained on flipped and turned copies, is the cheapest
        # way to give it more to teach (docs/profiles.md).
        image_size=32,
        teacher_image_size=64,
        teacher_augment=True,
        weights=None,  # ImageNet cannot be downloaded offline: every model from scratch
        teacher_epochs=10,
        student_epochs=12,
        batch_size=64,
        alpha=0.1,
        temperature=10.0,
        temperatures=(1, 10),
        batch_sizes=(64, 96),
        lr_backbone=1e-3,
        lr_dsnet=1e-3,
        synthetic_per_class=0,
        teacher_bn_momentum=0.9,
        # Five paired seeds: the KD gain's 95% interval is a t-interval over
        # five differences (notebooks 03 and 07).
        seeds=(10, 11, 12, 13, 14),
        alphas=(0.1, 0.5),
        # From scratch in one epoch the large students only show that their
        # path runs; two of the six keep the run near two hours.
        students=("MobileNet", "EfficientNetB0"),
        backbone_student_epochs=1,
    ),
    "smoke": Profile(
        name="smoke",
        data_source="synthetic",
        image_size=75,
        weights=None,
        teacher_epochs=1,
        student_epochs=1,
        batch_size=32,
        alpha=0.1,
        temperature=10.0,
        temperatures=(3, 10),
        batch_sizes=(18, 32),
        lr_backbone=1e-3,
        lr_dsnet=1e-3,
        synthetic_per_class=60,
        backbone_student_epochs=1,
        seeds=(10, 11),
        # Two or three batches an epoch: tracing a model's steps would take
        # longer than running them (docs/testing.md).
        run_eagerly=True,
        # Two of the six large students keep CI short; every one is built and
        # checked against its parameter count by the unit tests.
        students=("MobileNet", "EfficientNetB0"),
    ),
}


#: What the ``colab`` profile changes in ``paper``, and nothing else, so that
#: every notebook fits one Colab T4 session (about 10 h; ``python -m kd_utils
#: estimate --profile colab --flops`` gives about 6.5 h against 23.7 h for
#: ``paper`` in float32):
#:
#: * ``mixed_precision`` - float16 compute with float32 variables and loss
#:   scaling on the GPU (the paper trained in float32);
#: * ``seeds`` - two seeds (10, 11) of every student run instead of three:
#:   means and intervals over two runs;
#: * ``temperatures`` - Table 1 without T = 7, 70 and 90 (the paper's
#:   1, 3, 5, 10, 20, 50 and 100 stay).
#:
#: Data, image size, weights, epochs, batch sizes, alphas and the six
#: students are the paper's.
COLAB_CHANGES = {
    "mixed_precision": True,
    "seeds": (10, 11),
    "temperatures": (1, 3, 5, 10, 20, 50, 100),
}
PROFILES["colab"] = PROFILES["paper"].replace(name="colab", **COLAB_CHANGES)

#: What ``kaggle-cpu-robust`` changes in ``kaggle-cpu``, and nothing else: the
#: teacher and the students train on views that break the Kaggle images'
#: shortcuts (frames, dark corners, exposure; :func:`kd_utils.batches.robust_view`),
#: and every model starts with colour constancy (Shades of Gray). Chosen from
#: the literature before any external number was looked at; the two
#: profiles' results side by side are the before / after comparison.
ROBUST_CHANGES = {"robust_teacher": True, "robust_students": True, "color_constancy": True}
PROFILES["kaggle-cpu-robust"] = PROFILES["kaggle-cpu"].replace(name="kaggle-cpu-robust", **ROBUST_CHANGES)


#: The name of :func:`dry_run_profile`.
DRY_RUN = "paper-dry-run"


def dry_run_profile() -> Profile:
    """``paper`` on stand-ins, at the smallest scale that still runs every step.

    The code path is the paper's: 224 px, the ``folder`` data source, every
    keras.applications backbone built with its weights loaded from a file,
    the same loss, optimizers and learning rates. Only the scale and the
    inputs differ: a few synthetic images per class in the paper dataset's
    folder layout and weights files of randomly initialised backbones (both
    made by :mod:`kd_utils.dry_run` under ``$KD_DATA_DIR/paper-dry-run``),
    one epoch, one seed, two values per sweep. It proves that the paper's run
    works end to end offline; its numbers mean nothing.

    Its steps run eagerly (``run_eagerly``), as ``smoke``'s do: with ten
    images, tracing each large backbone's steps into tf.functions was most of
    the run (timings in docs/profiles.md). The computation is the same; the
    traced steps are the ones ``cpu`` and the unit tests run.
    """
    stand_ins = data_dir() / DRY_RUN
    return PROFILES["paper"].replace(
        name=DRY_RUN,
        data_root=str(stand_ins / "images"),
        weights=str(stand_ins / "weights"),
        stand_ins=True,
        teacher_epochs=1,
        student_epochs=1,
        backbone_student_epochs=1,
        seeds=(10,),
        temperatures=(3, 10),
        batch_sizes=(18, 64),
        alphas=(0.1, 0.5),
        run_eagerly=True,
    )


def profile_names() -> tuple[str, ...]:
    """Every name :func:`get_profile` accepts."""
    return (*PROFILE_NAMES, DRY_RUN)


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile ``name``, else ``$KD_PROFILE``, else ``cpu``; with overrides."""
    name = name or os.environ.get("KD_PROFILE") or "cpu"
    if name == DRY_RUN:
        profile = dry_run_profile()
        return profile.replace(**overrides) if overrides else profile
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}: expected one of {', '.join(profile_names())} "
            "(set KD_PROFILE or pass profile=...)."
        )
    profile = PROFILES[name]
    return profile.replace(**overrides) if overrides else profile


#: The Kaggle dataset the paper's images come from (owner/slug); ``kd_summary.json``
#: and the tables name it as the data of a profile that reads it.
KAGGLE_HANDLE = "hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images"
#: Its folder under the data dir, as ``python -m kd_utils download`` lays it out.
KAGGLE_FOLDER = "melanoma_cancer_dataset"

#: Where the Kaggle dataset is downloaded from: :func:`auto_profile` asks
#: whether this host answers before it plans a run on data not yet on disk.
KAGGLE_HOST = "www.kaggle.com"


def kaggle_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to :data:`KAGGLE_HOST` opens within ``timeout`` s."""
    import socket

    try:
        socket.create_connection((KAGGLE_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def auto_profile() -> tuple[str, str]:
    """``(profile name, reason)``, as the command line and the notebooks
    (``PROFILE = "auto"``) choose:

    * ``$KD_PROFILE`` when set;
    * a GPU: ``paper``, on the real images; when they are missing, notebook
      01 (or ``reproduce``) downloads them, and a failed download stops with
      its reason - a GPU never trains on generated images;
    * no GPU: ``kaggle-cpu`` when the real images are on disk or Kaggle
      answers (they are then downloaded);
    * generated images (``cpu``) only when neither, and the reason says so.
    """
    if os.environ.get("KD_PROFILE"):
        return os.environ["KD_PROFILE"], "set by KD_PROFILE"
    kaggle = data_dir() / KAGGLE_FOLDER
    here = kaggle.is_dir()
    if has_gpu():
        where = f"the Kaggle images in {kaggle}" if here else f"the Kaggle images, downloaded to {kaggle}"
        return "paper", f"a GPU: the paper's profile on {where}"
    if here:
        return REAL_CPU, f"no GPU: the Kaggle images in {kaggle}, small and from scratch"
    if kaggle_reachable():
        return REAL_CPU, f"no GPU: the Kaggle images, downloaded to {kaggle}, small and from scratch"
    return "cpu", (f"no GPU, no real images in {kaggle} and Kaggle cannot be reached: GENERATED images, "
                   "not real lesions (every table says 'data synthetic'; see data/README.md to get the real ones)")


def _names(value: str | tuple) -> tuple[str, ...]:
    """``"a, b"`` or ``("a", "b")`` as a tuple of stripped, non-empty strings."""
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(p).strip() for p in parts if str(p).strip())


def notebook_profile(name: str | None = "auto", seeds: str | tuple = "", mixed_precision: bool = False,
                     jit: bool = False, students: str | tuple = "") -> Profile:
    """The profile a notebook's parameters cell asks for: ``"auto"`` (or None)
    chooses as :func:`auto_profile` and prints why; ``seeds`` ("10,11" or a
    tuple; empty: the profile's), ``mixed_precision``, ``jit`` (XLA) and
    ``students`` (large students of Table 2, "MobileNet,EfficientNetB0" or a
    tuple; empty: ``$KD_SEEDS`` / ``$KD_STUDENTS`` if set, else the profile's)
    override the profile. Overrides are printed."""
    seeds = seeds or os.environ.get("KD_SEEDS", "")
    students = students or os.environ.get("KD_STUDENTS", "")
    if name in (None, "", "auto"):
        name, why = auto_profile()
        print(f"profile {name}: {why}")
    overrides = {}
    if seeds:
        overrides["seeds"] = tuple(int(s) for s in _names(seeds))
    if mixed_precision:
        overrides["mixed_precision"] = True
    if jit:
        overrides["jit_compile"] = True
    if students:
        overrides["students"] = _names(students)
    profile = get_profile(name, **overrides)
    if overrides:
        shown = {k: ", ".join(map(str, v)) if isinstance(v, tuple) else "on" for k, v in overrides.items()}
        print(f"profile {profile.name} with " + "; ".join(f"{k} {v}" for k, v in shown.items()))
    return profile


def _resolve(value: str | os.PathLike | None, default: Path) -> Path:
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root() / path


def cpu_description() -> str:
    """``CPU (<n> cores, <machine>)``: where a process runs when no accelerator is found."""
    import platform

    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def data_dir() -> Path:
    """Folder for downloaded or generated datasets (``$KD_DATA_DIR``)."""
    return _resolve(os.environ.get("KD_DATA_DIR"), repo_root() / "data")


def artifacts_dir(profile: Profile | str | None = None) -> Path:
    """``$KD_ARTIFACTS/<profile>`` (default ``<root>/artifacts/<profile>``)."""
    root = _resolve(os.environ.get("KD_ARTIFACTS"), repo_root() / "artifacts")
    if profile is None:
        return root
    name = profile if isinstance(profile, str) else profile.name
    return root / name


def results_dir(profile: Profile | str) -> Path:
    """``$KD_RESULTS/<profile>`` (default ``<root>/results/<profile>``): the
    tables and figures a profile produced (on Colab with Drive: on Drive)."""
    name = profile if isinstance(profile, str) else profile.name
    return _resolve(os.environ.get("KD_RESULTS"), repo_root() / "results") / name
