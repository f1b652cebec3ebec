"""Running the paper's experiment: its steps, their runs and the choices between them.

``pipeline`` (data, teacher logits, teacher, students over seeds), ``runs``
(a run's key, folder and record), ``choices`` (sweeps and the choices made on
validation), ``memory`` (a run retried with smaller micro-batches on a full
GPU), ``shard`` (sessions sharing the runs of a sweep), ``notebook`` (every
notebook's setup), ``download`` (the paper's images) and ``dry_run`` (the
paper profile's path offline). Built on the core modules of ``kd_utils``;
nothing here is imported by them.
"""
