"""Sweeps and the choices made on validation (notebook 04): the loss form and
T, then alpha, each by the mean validation accuracy over the seeds; saved for
notebooks 05-07 and for the student to deploy. The test split plays no part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import config, paths, reporting, storage, training
from . import pipeline, runs


def sweep(profile, manifest, teacher, *, temperatures=None, batch_sizes=None, alphas=None, student="DSNet",
          temperature=None, alpha=None, verbose=0, progress: pipeline.Progress | None = None, **options):
    """DSNet for each temperature (Table 1), batch size (Table 6) or alpha, every seed.

    Returns ``{value: [record per seed]}``; each run is skipped when already
    done. ``temperature`` / ``alpha`` fix the other knob (default: the profile's).
    """
    plan = [("temperature", float(t)) for t in temperatures or ()]
    plan += [("batch_size", int(b)) for b in batch_sizes or ()]
    plan += [("alpha", float(a)) for a in alphas or ()]
    progress = progress or pipeline.Progress(len(plan) * len(profile.seeds))
    records = {}
    for knob, value in plan:
        settings = {"temperature": temperature, "alpha": alpha, **options, knob: value}
        records[value] = pipeline.repeat(profile, manifest, teacher, student, verbose=verbose, progress=progress,
                                         **settings)
    return records


def mean_val_accuracy(runs) -> float:
    return float(np.mean([r["best_val_accuracy"] for r in reporting.runs_of(runs)]))


def choose_on_validation(records: dict):
    """The key whose runs had the best mean validation accuracy (ties: the first).

    ``records`` maps a value to a record or to a list of records (one per seed).
    The test split plays no part.
    """
    keys = list(records)
    return max(keys, key=lambda k: (mean_val_accuracy(records[k]), -keys.index(k)))


def _choice_basis(profile, manifest, teacher=None) -> dict:
    """What a choice on validation depends on: the teacher (default the
    profile's teacher run) and the data."""
    key = runs.teacher_key(teacher) if teacher is not None else runs.teacher_run(profile, manifest.content_hash)[0]
    return {"teacher": key, "manifest": manifest.content_hash}


def save_choice(profile: config.Profile, name: str, value, basis: dict | None = None) -> Path:
    return storage.write_json(paths.artifacts_dir(profile) / f"chosen_{name}.json",
                              {name: value, "chosen_on": "mean validation accuracy over seeds", "basis": basis})


def load_choice(profile: config.Profile, name: str, notebook: str = "04_temperature_sweep", basis=None):
    """A value chosen on validation; a choice made for another teacher or data counts as missing."""
    path = pipeline.require_step(paths.artifacts_dir(profile) / f"chosen_{name}.json", notebook, profile)
    saved = reporting.load_record(path)
    if basis is not None and saved.get("basis") not in (None, basis):
        raise pipeline.MissingStepError(f"{path} was chosen for another teacher or data set: run "
                                        f"notebooks/{notebook}.ipynb again with profile {profile.name!r}.")
    return saved[name]


SETTINGS = ("temperature", "alpha", "scale_by_t2")


#: How a record, table or summary names each loss form.
LOSS_FORMS = {False: "paper eq. (5)", True: "eq. (5) with T^2"}


def chosen_settings(profile: config.Profile, manifest=None, teacher=None) -> dict:
    """``{"temperature": T, "alpha": alpha, "scale_by_t2": bool}`` chosen on
    validation by notebook 04 (for ``teacher`` and ``manifest``, default the profile's)."""
    basis = _choice_basis(profile, manifest or pipeline.load_manifest(profile), teacher)
    return {name: load_choice(profile, name, basis=basis) for name in SETTINGS}


def choose_settings(profile: config.Profile, manifest, teacher, verbose: int = 0) -> dict:
    """Notebook 04's choice, by mean validation accuracy over seeds (the test
    split plays no part): the loss form and T together, over the profile's
    temperatures with the paper's equation (5) and with Hinton's T^2-scaled
    soft term, at the profile's alpha; then alpha over the profile's alphas
    at that form and T. Saved for the later notebooks. Returns the choice and
    the sweeps' records (``by_temperature``: ``{form: {T: runs}}`` with the
    forms of :data:`LOSS_FORMS`; ``by_alpha``: ``{alpha: runs}``)."""
    progress = pipeline.Progress(2 * len(profile.temperatures) * len(profile.seeds))
    by_temperature = {
        LOSS_FORMS[t2]: sweep(profile, manifest, teacher, temperatures=profile.temperatures, scale_by_t2=t2,
                              verbose=verbose, progress=progress)
        for t2 in (False, True)
    }
    candidates = {(t2, t): runs for t2 in (False, True) for t, runs in by_temperature[LOSS_FORMS[t2]].items()}
    scale_by_t2, temperature = choose_on_validation(candidates)
    by_alpha = sweep(profile, manifest, teacher, alphas=profile.alphas, temperature=temperature,
                     scale_by_t2=scale_by_t2, verbose=verbose)
    chosen = save_settings(profile, manifest, teacher, temperature=temperature, alpha=choose_on_validation(by_alpha),
                           scale_by_t2=scale_by_t2)
    return {**chosen, "by_temperature": by_temperature, "by_alpha": by_alpha}


def save_settings(profile: config.Profile, manifest, teacher, *, temperature, alpha, scale_by_t2) -> dict:
    """Save the loss form, T and alpha chosen on validation for this teacher and
    data, where notebooks 05-07 find them (:func:`chosen_settings`); returns them."""
    basis = _choice_basis(profile, manifest, teacher)
    chosen = {"temperature": temperature, "alpha": alpha, "scale_by_t2": scale_by_t2}
    for name in SETTINGS:
        save_choice(profile, name, chosen[name], basis)
    return chosen


def settings_for(profile: config.Profile, manifest, teacher) -> dict:
    """The loss form, T and alpha chosen on validation for this teacher and
    data; when notebook 04 has not chosen them yet, its sweep runs now (skip-if-done)."""
    try:
        return chosen_settings(profile, manifest, teacher)
    except pipeline.MissingStepError:
        print("No loss form, T and alpha chosen yet for this teacher and data: running the sweep of notebook 04 now.")
        chosen = choose_settings(profile, manifest, teacher)
        return {name: chosen[name] for name in SETTINGS}


def describe_settings(settings: dict) -> str:
    """``"T = 10, alpha = 0.1, eq. (5) with T^2"``: a chosen setting in words."""
    return (f"T = {settings['temperature']:g}, alpha = {settings['alpha']:g}, "
            f"{LOSS_FORMS[bool(settings.get('scale_by_t2', False))]}")


def compared_models(profile: config.Profile, manifest, teacher, teacher_record: dict, chosen: dict) -> dict:
    """The models notebook 06 scores beyond the test split, ``{name: [record per run]}``:
    the teacher, DSNet and each large student distilled (``chosen`` settings)
    and without the teacher. A profile whose teacher trains on robust views
    (``robust_teacher``) while its students do too adds DSNet trained without
    the views, distilled from that teacher, on the uniform and shuffled
    controls' soft targets (notebook 07's) and without a teacher: whether
    distillation passes the teacher's robustness on, set against soft
    targets that carry none of its knowledge. Runs finished by notebooks
    03-05 are loaded; the extra ones are trained here."""
    groups = {"Teacher ResNet50": [teacher_record],
              "DSNet distilled": pipeline.repeat(profile, manifest, teacher, **chosen),
              "DSNet without teacher": pipeline.repeat(profile, manifest, teacher, alpha=1.0)}
    if profile.compares_without_views:
        groups["DSNet distilled, trained without the views"] = pipeline.repeat(
            profile, manifest, teacher, robust=False, **chosen)
        for control in runs.TEACHER_CONTROLS:
            groups[f"DSNet, {control} teacher, trained without the views"] = pipeline.repeat(
                profile, manifest, teacher, robust=False, teacher_control=control, **chosen)
        groups["DSNet without teacher, trained without the views"] = pipeline.repeat(
            profile, manifest, teacher, alpha=1.0, robust=False)
    for name in profile.students:
        groups[f"{name} distilled"] = pipeline.repeat(profile, manifest, teacher, name, **chosen)
        groups[f"{name} without teacher"] = pipeline.repeat(profile, manifest, teacher, name, alpha=1.0)
    return groups


def final_student_path(profile: config.Profile, student: str = "DSNet", *, manifest=None, teacher=None) -> Path:
    """The ``.keras`` file of the student to deploy: the temperature and alpha
    chosen on validation (notebook 04) and, of its seeds, the one with the
    best validation accuracy (distilled from ``teacher``, default the profile's
    teacher run, on ``manifest``, default the profile's)."""
    manifest = manifest or pipeline.load_manifest(profile)
    chosen = chosen_settings(profile, manifest, teacher)
    records = {}
    for seed in profile.seeds:
        key, run_dir, _ = pipeline.student_of_profile(profile, manifest, student, teacher, seed=seed, **chosen)
        record = training.load_finished(run_dir, key)
        if record is not None:
            records[run_dir] = record
    if not records:
        raise pipeline.MissingStepError(
            f"No finished {student} run at T={chosen['temperature']:g}, alpha={chosen['alpha']:g} in "
            f"{paths.artifacts_dir(profile) / 'runs'}: run notebooks/04_temperature_sweep.ipynb with profile "
            f"{profile.name!r} (or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return choose_on_validation(records) / training.BEST_FILE
