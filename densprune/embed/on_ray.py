"""The embedding stage on a Ray cluster: one embedder actor per worker slot, one task per shard.

Shards are the unit of work and of resumption, exactly as on one machine: each actor writes
``shard-NNNNN.npz`` into the run's work folder (which must be on storage every node sees), and
shards already there are skipped. The head node then assembles the shards as usual.

    densprune precompute SOURCE --workspace DIR --engine ray [--ray-address auto] [--ray-actors 8]
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from densprune.embed.runner import EmbedSettings, embed_source
from densprune.embed.shards import shard_bounds, shard_path
from densprune.ingest.sources import SampleRef

log = logging.getLogger(__name__)


class _ShardWorker:
    """Holds one embedder (model loaded once) and embeds the shards it is handed."""

    def __init__(self, embedder_kwargs: dict, settings: EmbedSettings) -> None:
        import logging as _logging

        from densprune.embed.models import make_embedder

        _logging.basicConfig(level=_logging.WARNING)
        self.embedder = make_embedder(**embedder_kwargs)
        self.settings = settings

    def run(self, refs: list[SampleRef], wd: str, shard: int) -> int:
        embed_source(refs, self.embedder, Path(wd), self.settings, only_shards=[shard], progress=False)
        return shard


def embed_with_ray(refs: list[SampleRef], embedder_kwargs: dict, wd: Path, settings: EmbedSettings, *,
                   address: str | None = None, actors: int | None = None, gpus_per_actor: float = 0.0) -> list[Path]:
    """Embed the shards still missing under ``wd`` with a pool of Ray actors; returns all shard paths."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise RuntimeError("--engine ray needs Ray: pip install 'densprune[distributed]'") from exc

    wd.mkdir(parents=True, exist_ok=True)
    bounds = shard_bounds(len(refs), settings.shard_size)
    paths = [shard_path(wd, k) for k in range(len(bounds))]
    todo = [k for k, p in enumerate(paths) if not p.exists()]
    if len(todo) < len(paths):
        log.info("resuming: %d of %d shards already embedded in %s", len(paths) - len(todo), len(paths), wd)
    if not todo:
        return paths
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per_actor_cpus = max(1, settings.workers)
        n_actors = max(1, min(len(todo), actors or max(1, cpus // per_actor_cpus)))
        remote_cls = ray.remote(num_cpus=per_actor_cpus, num_gpus=gpus_per_actor)(_ShardWorker)
        pool = ActorPool([remote_cls.remote(embedder_kwargs, settings) for _ in range(n_actors)])
        refs_handle = ray.put(refs)
        log.info("ray: %d shards on %d actors (%d CPUs in the cluster)", len(todo), n_actors, cpus)
        with tqdm(total=len(todo), desc="embed shards (ray)", unit="shard", disable=None) as bar:
            for _ in pool.map_unordered(lambda a, k: a.run.remote(refs_handle, str(wd), k), todo):
                bar.update(1)
    finally:
        if started:
            ray.shutdown()
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"ray run finished but {len(missing)} shards are missing, e.g. {missing[0]}")
    return paths
