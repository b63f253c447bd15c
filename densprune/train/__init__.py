"""Training from plans: presets, the trainer command, run records, the supervisor, launching, evaluation.

``records`` (run folders, run.json, the ``runs`` rows), ``supervisor`` (export, train, watch, evaluate),
``launch`` (background supervisors, cancelling), ``listing`` (runs, curves, results), ``evaluation``
(zero-shot and retrieval), ``command`` (schedules, the open_clip_train argument list), ``presets``.
"""
