"""The precompute configuration: everything ``densprune precompute`` can be told, and the one home of
its defaults (the command line reads them from here: ``config_default``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from densprune.cluster.concepts import NEIGHBORS
from densprune.cluster.kmeans import NITER, SEED
from densprune.embed.models import DEFAULT_CONCEPT_MODEL, DEFAULT_MODEL, DEFAULT_PRETRAINED
from densprune.embed.settings import EmbedSettings


@dataclass(frozen=True, slots=True)
class PrecomputeConfig:
    """Everything ``densprune precompute`` can be told (see ``densprune precompute --help``)."""

    source: str
    workspace: Path
    embedder: str = "openclip"
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    weights: str | None = None
    device: str = "auto"
    # a second image embedder the concepts are built on (k-means, SemDeDup, map, decontamination), beside
    # the CLIP --embedder that gives the CLIP score, search and zero-shot names; None: the --embedder's vectors
    concept_embedder: str | None = None  # "timm"
    concept_model: str = DEFAULT_CONCEPT_MODEL
    concept_pretrained: str | None = "hub"  # timm's weights from the Hugging Face cache/hub; "none": random (tests)
    concept_weights: str | None = None  # a local checkpoint instead
    concept_image_size: int | None = None  # input size (None: the model's own; DINOv2-L/14: 518)
    concept_vectors: str | None = None  # released sources: precomputed concept vectors (.npy, one row per source row)
    clusters: int | None = None  # None -> default_num_clusters(N)
    niter: int = NITER
    seed: int = SEED
    neighbors: int = NEIGHBORS
    eval_per_category: int = 20  # held-out eval images per top-level category (sources with categories)
    eval_min_category: int = 100  # only categories with at least this many images give eval images
    decontaminate: float | None = None  # pool rows at >= this cosine to an eval image (or with its caption): set aside
    layout_rows: int = 20_000  # the app draws at most 20,000 points of the map
    label_vocabulary: str | None = None  # text file, one name per line; None -> open_clip's ImageNet class names
    dedup_clusters: int | str = "auto"  # SemDeDup groups: "auto" (split concepts > 2,000 rows), "concepts", or a total
    dtype: str = "auto"  # of the .npy vectors: auto = float16 for open_clip (as LAION/DataComp ship them), float32
    #                      offline, the stored dtype for released embeddings
    thumbnails: str = "auto"  # all | sample | none | auto (all up to 1M rows, else sample)
    thumbs_per_concept: int = 96  # rows per concept with a thumbnail in ``sample`` mode
    image_column: str | None = None
    caption_column: str | None = None
    follow_links: bool = False  # read what a folder source's symbolic links out of it point to (else rejected)
    force: bool = False
    keep_work: bool = False
    engine: str = "local"  # "local" (DataLoader on this machine) or "ray" (actors on a Ray cluster)
    ray_address: str | None = None
    ray_actors: int | None = None
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    # released embeddings (densprune.ingest.released): None detects a released layout and otherwise reads
    # SOURCE as images; "auto" requires one of the layouts; "clip-retrieval" / "datacomp" name it
    embeddings_layout: str | None = None
    embedding_key: str | None = None  # DataComp .npz member of the image vectors (None: b32_img)


def config_default(name: str) -> object:
    """The default of ``PrecomputeConfig.name`` (or of ``EmbedSettings.name``): what the CLI shows and uses."""
    for cls in (PrecomputeConfig, EmbedSettings):
        for f in dataclasses.fields(cls):
            if f.name == name and f.default is not dataclasses.MISSING:
                return f.default
    raise KeyError(f"no default for {name!r}")
