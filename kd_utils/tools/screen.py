"""A candidate setting measured where choices are made: validation and the battery.

Before a change to a profile (colour constancy on or off, other views, another
schedule) earns a full ``reproduce``, it is screened: the models it touches
are trained with the change - DSNet without a teacher for each seed, and the
teacher when asked - and each is scored on the **validation split** only:
its accuracy there, and the share of its validation calls that flip under
every transform of the shortcut battery (:data:`kd_utils.tools.shortcuts.BATTERY`,
then the :data:`~kd_utils.tools.shortcuts.FLOOR`). A screen shows nothing
of the test split and reads no external folder: it informs a choice, and
choices are made on validation. (Each run it trains still stores its test
predictions, as every run does, for the full run that may reuse it.)

A change is either a profile field (:data:`SETTINGS`, ``color_constancy=true``)
or a number of the robust views (:data:`kd_utils.batches.ROBUST`,
``vignette_probability=0.5``). Each enters the run keys, so screened runs
sit beside the profile's own in its artifacts folder and are never mistaken
for them; the unchanged profile screened the same way is the baseline (the
same keys as its ``reproduce``, reused when there).

``python -m kd_utils screen --profile kaggle-cpu-robust --set color_constancy=true --seeds 10 11``
"""

from __future__ import annotations

import contextlib
import dataclasses

import pandas as pd

from .. import batches, config


#: Profile fields a screen may change, each a value every run it touches
#: writes into its key (so a run trained with another value is never reused).
SETTINGS = {
    "color_constancy": bool,
    "robust_teacher": bool,
    "robust_students": bool,
    "student_weight_average": float,
    "student_epochs": int,
    "teacher_epochs": int,
    "lr_dsnet": float,
    "lr_backbone": float,
    "batch_size": int,
    # The distilled and control DSNets' loss (a DSNet without a teacher ignores them):
    "temperature": float,
    "alpha": float,
}

#: The one field of :data:`SETTINGS` that may be ``none`` (no average).
OPTIONAL = ("student_weight_average",)

#: What a screen trains: ``dsnet`` (without a teacher, one run per seed),
#: ``teacher``, ``distilled`` (DSNet distilled from that teacher at the
#: profile's temperature and alpha, one run per seed) and the two controls of
#: notebook 07, ``uniform`` and ``shuffled`` (the same student, loss and
#: budget on soft targets that carry none of the teacher's knowledge:
#: :func:`kd_utils.experiments.pipeline.control_logits`). A gain of
#: ``distilled`` counts only against all three of ``dsnet``, ``uniform`` and
#: ``shuffled``.
#: (:data:`CONTROLS` are :data:`kd_utils.experiments.runs.TEACHER_CONTROLS`,
#: named here so that the command line need not import Keras; a test ties them.)
CONTROLS = ("uniform", "shuffled")
MODELS = ("dsnet", "teacher", "distilled", *CONTROLS)

#: The models of :data:`MODELS` that need the teacher's logits.
TAUGHT = ("distilled", *CONTROLS)


class ScreenError(ValueError):
    """A change a screen cannot make (unknown name, bad value)."""


def _value(name: str, text: str, kind):
    low = text.strip().lower()
    if kind is bool:
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ScreenError(f"{name} takes true or false, got {text!r}.")
    if kind is float and low in ("none", "off"):
        return None
    try:
        return kind(text)
    except ValueError:
        raise ScreenError(f"{name} takes a {'whole number' if kind is int else 'number'}, got {text!r}.") from None


def _split(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ScreenError(f"expected NAME=VALUE, got {text!r}.")
    return name.strip(), value.strip()


def _known_setting(name: str) -> None:
    if name not in SETTINGS:
        raise ScreenError(f"{name!r} is not a setting a screen can change; these are: {', '.join(SETTINGS)} "
                          f"(the robust views' numbers go with --view).")


def parse_setting(text: str) -> tuple[str, object]:
    """``"color_constancy=false"`` -> ``("color_constancy", False)``; a field of :data:`SETTINGS` only."""
    name, value = _split(text)
    _known_setting(name)
    parsed = _value(name, value, SETTINGS[name])
    if parsed is None and name not in OPTIONAL:
        raise ScreenError(f"{name} takes a number, got {value!r}.")
    return name, parsed


def parse_view(text: str) -> tuple[str, object]:
    """``"vignette_probability=0.5"`` or ``"zoom=0.6,1.5"`` -> a replacement for
    one entry of :data:`kd_utils.batches.ROBUST`, of the same shape."""
    name, value = _split(text)
    if name not in batches.ROBUST:
        raise ScreenError(f"{name!r} is not a number of the robust views; these are: {', '.join(batches.ROBUST)}.")
    current = batches.ROBUST[name]
    parts = [_value(name, part, float) for part in value.split(",")]
    if any(p is None for p in parts):
        raise ScreenError(f"{name} takes numbers, got {value!r}.")
    if name in ("zoom", "channel_gain") and min(parts) <= 0:
        raise ScreenError(f"{name} takes factors above 0, got {value!r}.")
    if isinstance(current, tuple):
        if len(parts) != len(current) or parts[0] > parts[1]:
            raise ScreenError(f"{name} takes LOW,HIGH with LOW <= HIGH (now {current[0]:g},{current[1]:g}), got {value!r}.")
        return name, tuple(parts)
    if len(parts) != 1:
        raise ScreenError(f"{name} takes one number (now {current:g}), got {value!r}.")
    return name, parts[0]


@contextlib.contextmanager
def robust_views(changes: dict):
    """:data:`kd_utils.batches.ROBUST` with ``changes`` while the block runs, as it was after."""
    saved = dict(batches.ROBUST)
    batches.ROBUST.update(changes)
    try:
        yield
    finally:
        batches.ROBUST.clear()
        batches.ROBUST.update(saved)


@dataclasses.dataclass
class Screen:
    """What a screen found: ``runs`` (one row per model and seed: validation
    accuracy, epochs, the largest battery flip and where) and ``flips`` (a
    column per model and seed, a row per transform, the floor last)."""

    profile: str
    changes: dict
    runs: pd.DataFrame
    flips: pd.DataFrame

    def to_json(self) -> dict:
        return {"profile": self.profile, "changes": self.changes, "split": "val",
                "runs": self.runs.to_dict(orient="records"),
                "flips": {column: self.flips[column].to_dict() for column in self.flips}}


def summarise(name: str, seed, record: dict, table: pd.DataFrame) -> tuple[dict, pd.Series]:
    """One model's row of :attr:`Screen.runs` and its column of :attr:`Screen.flips`
    from its run record and its validation-split battery report."""
    from . import shortcuts

    flips = table["flipped"].drop("none")
    battery = flips.drop([t.name for t in shortcuts.FLOOR])
    row = {"model": name, "seed": seed, "val accuracy": float(record["best_val_accuracy"]),
           "epochs": len(record["history"]["loss"]), "best epoch": record.get("best_epoch"),
           "largest flip": float(battery.max()), "at": str(battery.idxmax()),
           "transforms over 5%": int((battery > 0.05).sum()), "key": record["key"]}
    return row, flips


def profiles(profile: config.Profile, settings: dict, converged: bool = False, seeds=None):
    """``(changed, students)``: ``profile`` with ``settings``, and the profile its
    DSNets train with (on the convergence schedule when ``converged``, with
    ``seeds`` when given). A field outside :data:`SETTINGS` or a profile
    without a convergence schedule is a :class:`ScreenError`; a value the
    profile refuses, its ``ValueError``."""
    for name in settings:
        _known_setting(name)
    changed = profile.replace(**settings)
    students = changed
    if converged:
        students = changed.converged()
        if students is None:
            raise ScreenError(f"profile {profile.name} has no convergence schedule (converged_epochs = 0).")
    if seeds:
        students = students.replace(seeds=tuple(int(s) for s in seeds))
    return changed, students


def screen(profile: config.Profile, settings: dict | None = None, views: dict | None = None, *,
           models=("dsnet",), seeds=None, converged: bool = False, verbose: int = 0, log=print) -> Screen:
    """Train the models of ``models`` (:data:`MODELS`) with ``settings`` (profile fields) and
    ``views`` (:data:`kd_utils.batches.ROBUST` entries), or load them when
    their runs are done, and score each on the validation split.

    ``converged`` trains the DSNets on the profile's convergence schedule
    (:meth:`kd_utils.config.Profile.converged`); ``seeds`` default to the
    profile's (the first two when converged). The teacher, trained once with
    the profile's seed, has one row whatever the seeds.
    """
    from ..experiments import pipeline
    from . import shortcuts

    settings, views = dict(settings or {}), dict(views or {})
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ScreenError(f"models are some of {', '.join(MODELS)}, got {', '.join(unknown) or 'none'}.")
    changed, student_profile = profiles(profile, settings, converged, seeds)
    rows, columns = [], {}
    with robust_views(views):
        manifest = pipeline.prepare_data(changed)
        teacher = None
        if "teacher" in models or any(m in models for m in TAUGHT):
            teacher, record = pipeline.train_teacher(changed, manifest, verbose=verbose)
            if "teacher" in models:
                row, flips = summarise("teacher", changed.seed, record,
                                       shortcuts.report_split(teacher, manifest, "val"))
                rows.append(row)
                columns["teacher"] = flips
                log(_line(row))
        at = f"T = {changed.temperature:g}, alpha = {changed.alpha:g}"
        students = ([("distilled", f"DSNet distilled ({at})", "distilled", teacher, None, None)]
                    + [(c, f"DSNet, {c} teacher ({at})", c, teacher, None, c) for c in CONTROLS]
                    + [("dsnet", "DSNet without teacher", "DSNet", None, 1.0, None)])
        for wanted, name, short, given, alpha, control in students:
            if wanted not in models:
                continue
            for seed in student_profile.seeds:
                model, record = pipeline.distill_student(student_profile, manifest, given, alpha=alpha, seed=seed,
                                                         teacher_control=control, verbose=verbose)
                row, flips = summarise(name, seed, record, shortcuts.report_split(model, manifest, "val"))
                rows.append(row)
                columns[f"{short} s{seed}"] = flips
                log(_line(row))
    changes = {**settings, **{f"views.{k}": list(v) if isinstance(v, tuple) else v for k, v in views.items()}}
    if converged:
        changes["schedule"] = (f"converged: up to {student_profile.student_epochs} epochs, "
                               f"patience {student_profile.student_patience}")
    return Screen(profile.name, changes, pd.DataFrame(rows), pd.DataFrame(columns))


def _line(row: dict) -> str:
    return (f"{row['model']}, seed {row['seed']}: validation {row['val accuracy']:.3f} after {row['epochs']} epochs "
            f"(best {row['best epoch']}), largest flip {row['largest flip']:.3f} ({row['at']}), "
            f"{row['transforms over 5%']} transforms over 5%")


def text(result: Screen) -> str:
    """The screen as printed by the command: what changed, the runs, the flips."""
    changes = ", ".join(f"{k}={v}" for k, v in result.changes.items()) or "none (the profile as it is)"
    runs = result.runs.drop(columns="key").to_string(index=False, float_format=lambda v: f"{v:.3f}")
    flips = result.flips.to_string(float_format=lambda v: f"{v:.3f}")
    return (f"Screen of profile {result.profile}, changes: {changes}\n"
            f"Validation split only (no test, no external images).\n\n{runs}\n\n"
            f"Share of validation calls that flip (the last two rows are the floor):\n{flips}\n"
            f"Run keys: {', '.join(result.runs.key)}")

