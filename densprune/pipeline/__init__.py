"""Orchestration: the stages put in order, between the faces (cli/, app/) and the stages (ingest/,
embed/, cluster/, prune/, export/, train/).

``precompute`` (pick the path for a source), ``from_images`` / ``from_released`` (the two paths),
``stages`` (what both share), ``config`` (the precompute configuration and its defaults),
``recluster``, ``on_ray`` (the Ray stages), ``verify``.
"""
