"""Stand-ins for the paper profile's dry run (``paper-dry-run``).

The paper profile needs two things a machine without network lacks: the
ISIC images (a ``benign``/``malignant`` folder under ``train/`` and
``test/``) and the ImageNet weights of six keras.applications backbones.
This module makes local stand-ins for both, so that the paper's code path
runs end to end offline:

* images: a few images per class and split in the paper dataset's layout,
  ``<root>/train|test/benign|malignant/``: copies of the first files of the
  Kaggle dataset when it is on this machine (``<data dir>/melanoma_cancer_dataset``),
  else synthetic lesions (:mod:`kd_utils.synthetic`, 224 px PNGs);
* weights: for each backbone, the backbone built with ``include_top=False,
  weights=None`` at the profile's input shape (a random initialisation with
  a fixed seed), written in the format of the files keras.applications
  downloads - Keras' HDF5 weights file with one group per layer, by layer
  name, as ``~/.keras/models`` holds them - under the same names
  (:data:`kd_utils.models.WEIGHTS_FILES`). The constructors then load them
  with ``weights=<file>`` exactly as they load the downloaded file.

Nothing here says anything about accuracy: the weights are random and the
images few. :func:`ensure` is called by :func:`kd_utils.experiments.pipeline.prepare_data`
for a profile with ``stand_ins``, so any notebook made to run on
``paper-dry-run`` finds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import config, paths, storage, synthetic

#: Images per class written to ``train/`` and to ``test/``. The paper profile
#: pools the 10 and re-splits them (30% test, a fifth of the rest validation):
#: 5 training, 2 validation and 3 test images, both classes in every split.
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2
#: Seed of the stand-in weights: unlike any seed a run uses, so that a model
#: whose weights equal the file's has loaded it.
WEIGHTS_SEED = 2022


#: Written last into the stand-in images' folder: where its images came from.
IMAGES_MARKER = "stand_ins.json"
_COUNTS = {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}


def real_images(folder=None) -> dict[str, list[Path]] | None:
    """The first :data:`TRAIN_PER_CLASS` / :data:`TEST_PER_CLASS` images (by
    name) of each ``split/class`` folder of the Kaggle dataset (default:
    where ``download`` puts it), or None when it is not there or short."""
    from ..data import CLASS_NAMES
    from ..images import IMAGE_SUFFIXES

    folder = Path(folder) if folder else paths.data_dir() / config.KAGGLE_FOLDER
    picked = {}
    for split, n in _COUNTS.items():
        for name in CLASS_NAMES:
            where = folder / split / name
            files = sorted(p for p in where.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if where.is_dir() else []
            if len(files) < n:
                return None
            picked[f"{split}/{name}"] = files[:n]
    return picked


def write_images(root, image_size: int, seed: int, real=None) -> Path:
    """A few images in the paper dataset's layout under ``root``: copies of
    ``real`` (:func:`real_images`; default: looked up) when the Kaggle dataset
    is here, else synthetic lesions. Returns ``root``."""
    import shutil

    root = Path(root)
    real = real_images() if real is None else real
    if real:
        for where, files in real.items():
            (root / where).mkdir(parents=True, exist_ok=True)
            for file in files:
                shutil.copyfile(file, root / where / file.name)
        source = f"the first images of {Path(next(iter(real.values()))[0]).parents[2]}"
    else:
        synthetic.write_dataset(root / "train", TRAIN_PER_CLASS, image_size, seed)
        synthetic.write_dataset(root / "test", TEST_PER_CLASS, image_size, seed + 1)
        source = "synthetic"
    storage.write_json(root / IMAGES_MARKER, {"images": source})
    return root


def _legacy_weights(layer) -> list:
    """A layer's variables in the order of Keras' HDF5 weight files (trainable first)."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def save_weights_file(model, path) -> Path:
    """Write ``model``'s weights as keras.applications' weight files hold them:
    root attribute ``layer_names``, then per layer a group of that name with
    attribute ``weight_names`` and one data set per weight. Written atomically."""
    import h5py
    import keras

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
            f.attrs["backend"] = keras.backend.backend().encode("utf8")
            f.attrs["keras_version"] = keras.__version__.encode("utf8")
            for layer in model.layers:
                group = f.create_group(layer.name)
                variables = _legacy_weights(layer)
                names = [f"{layer.name}/{v.name}_{i}".encode("utf8") for i, v in enumerate(variables)]
                group.attrs["weight_names"] = names
                for name, variable in zip(names, variables):
                    group.create_dataset(name.decode("utf8"), data=keras.ops.convert_to_numpy(variable))

    return storage.atomic_write(path, write)


def read_weights_file(path) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, arrays)`` of every layer with weights in a weights file, in file order."""
    import h5py

    def names(attrs, key):
        return [n.decode("utf8") if hasattr(n, "decode") else str(n) for n in attrs[key]]

    with h5py.File(path, "r") as f:
        layers = []
        for layer in names(f.attrs, "layer_names"):
            weights = names(f[layer].attrs, "weight_names")
            if weights:
                layers.append((layer, [np.asarray(f[layer][w]) for w in weights]))
        return layers


def backbone_weights(model) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, arrays)`` of every layer with weights of a built backbone,
    in the order :func:`read_weights_file` gives them."""
    return [(layer.name, [np.asarray(v) for v in _legacy_weights(layer)])
            for layer in model.layers if _legacy_weights(layer)]


def write_weights(name: str, image_size: int, folder) -> Path:
    """The stand-in weights file of backbone ``name`` in ``folder`` (written now)."""
    import keras

    from .. import models

    keras.backend.clear_session(free_memory=True)  # layer names as in a fresh process, as Keras' own files
    keras.utils.set_random_seed(WEIGHTS_SEED)
    backbone = models.BACKBONES[name].constructor(include_top=False, weights=None,
                                                  input_shape=(image_size, image_size, 3))
    return save_weights_file(backbone, Path(folder) / models.WEIGHTS_FILES[name])


def backbones(profile: config.Profile) -> tuple[str, ...]:
    """The backbones a profile builds: the teacher's ResNet50 and its students."""
    return tuple(dict.fromkeys(("ResNet50", *profile.students)))


def ensure(profile: config.Profile) -> dict:
    """The profile's stand-in images and weights files, each written when missing.

    Returns ``{"images": folder, "weights": folder, "written": [what was made now]}``.
    """
    if not profile.stand_ins or not profile.data_root or profile.weights in (None, "imagenet"):
        raise ValueError(f"profile {profile.name!r} has no stand-ins (stand_ins, data_root and a weights folder).")
    from .. import models

    written = []
    images = Path(profile.data_root)
    if not (images / IMAGES_MARKER).is_file():
        written.append(str(write_images(images, profile.image_size, profile.seed)))
    weights = Path(profile.weights)
    for name in backbones(profile):
        if not (weights / models.WEIGHTS_FILES[name]).is_file():
            written.append(str(write_weights(name, profile.image_size, weights)))
    if written:
        import keras

        keras.backend.clear_session(free_memory=True)
        print(f"stand-ins for profile {profile.name} written (they prove the code path, not accuracy): "
              + ", ".join(Path(w).name for w in written), flush=True)
    return {"images": str(images), "weights": str(weights), "written": written}
