"""The ``densprune`` command line: ``main(argv)`` parses and dispatches, so tests can call it."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from densprune import __version__
from densprune.workspace import default_demo_workspace

log = logging.getLogger("densprune")

PACKAGE_DIR = Path(__file__).resolve().parent.parent
APP_SCRIPT = PACKAGE_DIR / "app" / "main.py"
# what .streamlit/config.toml says for `streamlit run app.py` in a checkout, as flags for any folder
APP_FLAGS = ("--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
             "--server.runOnSave", "false", "--server.fileWatcherType", "none", "--theme.primaryColor", "#4c78a8")


def _arg_type(parse):
    """An argparse ``type`` that shows ``parse``'s own ValueError message."""
    def wrapped(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return wrapped


def _add_precompute_flags(p: argparse.ArgumentParser, demo: bool = False) -> None:
    from densprune.cluster.subclusters import parse_dedup_clusters
    from densprune.pipeline.config import config_default as D  # the one home of the defaults

    g = p.add_argument_group("embedding")
    g.add_argument("--embedder", choices=["openclip", "offline"], default="offline" if demo else "openclip",
                   help="openclip: a CLIP model (needs weights); offline: pixel + caption TF-IDF features, "
                        "no weights, no network, no CLIP score (default: %(default)s)")
    g.add_argument("--model", default=D("model"), help="open_clip model name (default: %(default)s)")
    g.add_argument("--pretrained", default=D("pretrained"),
                   help="open_clip pretrained tag, or 'none' for random weights (tests only) (default: %(default)s)")
    g.add_argument("--weights", default=None, help="local open_clip checkpoint to load instead of downloading")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cpu")
    g.add_argument("--concept-embedder", choices=["timm"], default=None,
                   help="build the concepts (k-means, SemDeDup, the map, decontamination) on a second image "
                        "embedder, as the DBP paper clustered DINOv2 features; the --embedder still gives the "
                        "CLIP score, search and zero-shot names. Costs a second decoding pass (default: the "
                        "--embedder's vectors)")
    g.add_argument("--concept-model", default=D("concept_model"),
                   help="timm model of --concept-embedder timm (default: %(default)s, DINOv2-L/14)")
    g.add_argument("--concept-pretrained", default=D("concept_pretrained"),
                   help="'hub': timm's pretrained weights from the Hugging Face cache or hub; 'none': random "
                        "weights (tests only) (default: %(default)s)")
    g.add_argument("--concept-weights", default=None, metavar="PATH",
                   help="local checkpoint of --concept-model (timm's model.safetensors or the original DINOv2 .pth)")
    g.add_argument("--concept-image-size", type=int, default=None, metavar="PX",
                   help="input size of the concept model (default: its own; DINOv2's is 518, 224 is ~6x cheaper)")
    g.add_argument("--concept-vectors", default=None, metavar="FILE",
                   help="released embeddings only: precomputed concept vectors, an (R, d) .npy with one row per "
                        "source row in the source's shard order (e.g. DINOv2 features of the same LAION shards)")
    g.add_argument("--batch-size", type=int, default=D("batch_size"),
                   help="images per embedding batch (default: %(default)s)")
    g.add_argument("--workers", type=int, default=D("workers"), help="DataLoader decode workers (default: %(default)s)")
    g.add_argument("--shard-size", type=int, default=D("shard_size"),
                   help="samples per resumable shard (default: %(default)s)")
    g.add_argument("--max-pixels", type=int, default=D("max_pixels"),
                   help="reject images with more decoded pixels (default: %(default)s)")
    g.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto",
                   help="dtype of the .npy vectors; auto: float16 for openclip (as LAION and DataComp ship them), "
                        "float32 for offline; released embeddings keep their own dtype (default: %(default)s)")
    g.add_argument("--decode", choices=["auto", "cpu", "device"], default="auto",
                   help="where JPEGs are decoded: auto = on the GPU (nvJPEG, batched) when the model runs on CUDA, "
                        "else with PIL in the workers; other formats and JPEGs the GPU cannot decode always go "
                        "through PIL (default: %(default)s)")
    g.add_argument("--thumbnails", choices=["auto", "all", "sample", "none"], default="auto",
                   help="thumbnails in DIR/thumbs.bin: all rows (a 128 px JPEG, ~4 KB: ~400 GB at 100M rows; "
                        "small JPEG/WebP sources are kept as they are), a sample "
                        "(the --thumbs-per-concept rows nearest each concept's centre, the ones the app shows "
                        "first), or none; the app reads any other image from its source. auto: all up to 1M "
                        "rows, else sample (default: %(default)s)")
    g.add_argument("--thumbs-per-concept", type=int, default=D("thumbs_per_concept"),
                   help="rows per concept with a thumbnail under --thumbnails sample (default: %(default)s)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: DataLoader on this machine; ray: one embedder actor per worker slot of a Ray "
                        "cluster, one task per shard (the workspace must be on storage every node sees)")
    g.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    g.add_argument("--ray-actors", type=int, default=None, help="number of embedder actors (default: CPUs / --workers)")
    c = p.add_argument_group("clustering")
    c.add_argument("--clusters", "-k", type=int, default=None,
                   help="number of concepts K (default: sqrt(N), at most 500)")
    c.add_argument("--niter", type=int, default=D("niter"), help="k-means iterations (default: %(default)s)")
    c.add_argument("--seed", type=int, default=D("seed"),
                   help="seed for k-means, sampling, layout (default: %(default)s)")
    c.add_argument("--neighbors", type=int, default=D("neighbors"),
                   help="l nearest centroids for d_inter (default: %(default)s)")
    c.add_argument("--label-vocabulary", default=None, metavar="FILE",
                   help="zero-shot concept names (open_clip embedder only): one name per line; "
                        "default: open_clip's 1,000 ImageNet class names")
    c.add_argument("--layout-rows", type=int, default=D("layout_rows"),
                   help="rows sampled for the 2-D UMAP map; the app draws at most 20,000 (default: %(default)s)")
    c.add_argument("--dedup-clusters", type=_arg_type(parse_dedup_clusters), default="auto",
                   help="groups SemDeDup searches: 'auto' splits concepts of more than 2,000 rows into sub-clusters "
                        "of about that size (cost ~N x 2,000 pairs instead of ~N^2/K), 'concepts' searches whole "
                        "concepts, a number sets the total (default: %(default)s)")
    e = p.add_argument_group("evaluation split")
    e.add_argument("--eval-per-category", type=int, default=D("eval_per_category"),
                   help="held-out eval images per top-level category, for sources with categories "
                        "(default: %(default)s)")
    e.add_argument("--eval-min-category", type=int, default=D("eval_min_category"),
                   help="only categories with at least this many images give eval images (default: %(default)s)")
    e.add_argument("--decontaminate", type=float, default=D("decontaminate"), metavar="SIM",
                   help="set aside every pool image at cosine similarity >= SIM to an eval image, or with an eval "
                        "image's caption (split 'eval-copy': never kept, never evaluated), as DataComp "
                        "deduplicates its pool against the eval sets; e.g. 0.95 (default: off)")
    p.add_argument("--force", action="store_true", help="rebuild a complete workspace from scratch")
    p.add_argument("--keep-work", action="store_true", help="keep the embedding shards in DIR/.work after success")


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Where the app listens."""
    p.add_argument("--port", type=int, default=8501, help="app port (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes the app)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the app answers to besides localhost and IP addresses (requests for any other "
                        "name are refused, against DNS rebinding); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densprune", description="Density-Based Pruning of image-text datasets.")
    parser.add_argument("--version", action="version", version=f"densprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("precompute", help="embed, cluster and measure a dataset into a workspace",
                       description="Build a workspace: decode + embed every image, spherical k-means, concept "
                                   "statistics, SemDeDup similarities, 2-D map, all in DIR/densprune.duckdb.")
    p.add_argument("source", help="'demo', an image folder, a .csv/.tsv/.parquet table, or webdataset .tar shards "
                                  "(folder, glob or {00000..00009} pattern)")
    p.add_argument("--workspace", "-w", required=True, type=Path, help="workspace folder to create")
    p.add_argument("--image-column", default=None, help="table column with image paths (or bytes)")
    p.add_argument("--caption-column", default=None, help="table column with captions")
    p.add_argument("--follow-links", action="store_true",
                   help="image folder: read the files and folders its symbolic links point to outside it "
                        "(default: such links are rejected, with their reason)")
    r = p.add_argument_group("released embeddings (no image is decoded or embedded)")
    r.add_argument("--embeddings-layout", choices=["auto", "clip-retrieval", "datacomp"], default=None,
                   help="SOURCE is a folder of released embeddings: clip-retrieval (LAION: img_emb/img_emb_K.npy, "
                        "text_emb/text_emb_K.npy, metadata/metadata_K.parquet) or datacomp (SHARD.parquet + "
                        "SHARD.npz); auto: whichever matches. Default: detected, else SOURCE holds images")
    r.add_argument("--embedding-key", default=None,
                   help="datacomp: the .npz array of image vectors, b32_img (default) or l14_img")
    _add_precompute_flags(p)
    p.set_defaults(func=cmd_precompute)

    p = sub.add_parser("demo", help="build the bundled demo workspace (first run) and open the app")
    p.add_argument("--workspace", "-w", type=Path, default=None, help="default: ./workspaces/demo")
    p.add_argument("--no-app", action="store_true", help="print the workspace summary instead of opening the app")
    _add_serve_flags(p)
    _add_precompute_flags(p, demo=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="summarise a workspace")
    p.add_argument("workspace", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("verify", help="check a workspace and its exports for consistency (exit code 1 on problems)",
                       description="Row counts across tables and .npy files, centroids, plan masks, and every export "
                                   "in DIR/exports (plus --export FILE) against its manifest (sha256, counts). "
                                   "Prints one line per problem, naming the file; exit code 0 when all holds.")
    p.add_argument("workspace", type=Path)
    p.add_argument("--export", action="append", type=Path, default=[], metavar="FILE",
                   help="an export (file, folder or its .manifest.json) outside DIR/exports to check too; repeatable")
    p.add_argument("--repair", action="store_true",
                   help="remove what interrupted runs left (temporary files of writers that are gone, plan masks no "
                        "plan row names), finish a committed recluster's centroid rename, then check again; "
                        "nothing else is touched")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("app", help="open the exploration app on a workspace (default: the demo)")
    p.add_argument("workspace", type=Path, nargs="?", default=None)
    _add_serve_flags(p)
    p.add_argument("--allow-root", action="append", type=Path, default=[], metavar="DIR",
                   help="the app may open (and train in) workspaces under DIR; repeatable (default: the folder "
                        "holding WORKSPACE)")
    p.add_argument("--allow-custom-models", action="store_true",
                   help="let the Train page take any open_clip model name (local-dir:, hf-hub: included) instead "
                        "of one from open_clip's list")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("recluster", help="re-run k-means on the deduplicated pool (the paper's full variant)",
                       description="Re-run spherical k-means on the pool rows that survive SemDeDup at --dedup-eps, "
                                   "as the paper did for LAION-DeDup-280M, then reassign every row and recompute the "
                                   "concept statistics, labels and map positions, in one transaction. Plans measure "
                                   "concepts on what remains anyway; reclustering also moves the centroids. "
                                   "See docs/method.md for when it is worth it.")
    p.add_argument("workspace", type=Path)
    p.add_argument("--dedup-eps", type=float, required=True, help="SemDeDup eps in [0, 1] that defines the "
                                                                  "deduplicated pool k-means is trained on")
    p.add_argument("--clusters", "-k", type=int, default=None, help="number of concepts K (default: the workspace's)")
    p.add_argument("--niter", type=int, default=None, help="k-means iterations (default: the workspace's)")
    p.add_argument("--seed", type=int, default=None, help="k-means seed (default: the workspace's)")
    p.add_argument("--drop-plans", action="store_true",
                   help="delete the saved plans (they refer to the old clusters) instead of refusing")
    p.set_defaults(func=cmd_recluster)

    p = sub.add_parser("negclip", help="score every image-caption pair by negCLIPLoss (the negclip plan method)",
                       description="negCLIPLoss (Wang et al. 2024): the CLIP score minus the CLIP loss's "
                                   "normalisation over random batches of the pool (docs/method.md). Needs image and "
                                   "caption vectors of one CLIP model; writes embeddings/negclip.npy. The cost is "
                                   "N x batch x d per draw: give --device cuda at scale.")
    p.add_argument("workspace", type=Path)
    p.add_argument("--batch", type=int, default=32_768, help="rows per random batch (Wang et al.: 32768)")
    p.add_argument("--draws", type=int, default=10, help="random batches per pair, averaged (Wang et al.: 10)")
    p.add_argument("--tau", type=float, default=0.01, help="the teacher's temperature (OpenAI CLIP: 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device for the products (cpu, cuda)")
    p.set_defaults(func=cmd_negclip)

    from densprune.cli import curation as cli_curation
    from densprune.cli import plans as cli_plans
    from densprune.cli import search as cli_search
    from densprune.cli import train as cli_train

    cli_plans.add_commands(sub)
    cli_curation.add_commands(sub)
    cli_search.add_commands(sub)
    cli_train.add_commands(sub)
    return parser


def _precompute_config(args: argparse.Namespace, source: str, workspace: Path):
    from densprune.embed.runner import EmbedSettings
    from densprune.pipeline.config import PrecomputeConfig

    return PrecomputeConfig(
        source=source, workspace=workspace, embedder=args.embedder, model=args.model,
        pretrained=args.pretrained, weights=args.weights, device=args.device,
        concept_embedder=args.concept_embedder, concept_model=args.concept_model,
        concept_pretrained=args.concept_pretrained, concept_weights=args.concept_weights,
        concept_image_size=args.concept_image_size, concept_vectors=args.concept_vectors, clusters=args.clusters,
        niter=args.niter, seed=args.seed, neighbors=args.neighbors, eval_per_category=args.eval_per_category,
        eval_min_category=args.eval_min_category, decontaminate=args.decontaminate,
        layout_rows=args.layout_rows, dtype=args.dtype,
        label_vocabulary=args.label_vocabulary,
        thumbnails=args.thumbnails, thumbs_per_concept=args.thumbs_per_concept,
        dedup_clusters=args.dedup_clusters,
        image_column=getattr(args, "image_column", None), caption_column=getattr(args, "caption_column", None),
        follow_links=getattr(args, "follow_links", False),
        force=args.force, keep_work=args.keep_work, engine=args.engine, ray_address=args.ray_address,
        ray_actors=args.ray_actors, embeddings_layout=getattr(args, "embeddings_layout", None),
        embedding_key=getattr(args, "embedding_key", None),
        embed=EmbedSettings(batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
                            max_pixels=args.max_pixels, decode=args.decode),
    )


def cmd_precompute(args: argparse.Namespace) -> int:
    from densprune.pipeline.precompute import precompute

    ws = precompute(_precompute_config(args, args.source, args.workspace))
    print(summary_text(ws))
    return 0


def cmd_recluster(args: argparse.Namespace) -> int:
    from densprune.pipeline.recluster import recluster

    if not 0.0 <= args.dedup_eps <= 1.0:
        raise ValueError(f"--dedup-eps must lie in [0, 1], got {args.dedup_eps}")
    rep = recluster(args.workspace, args.dedup_eps, clusters=args.clusters, niter=args.niter, seed=args.seed,
                    drop_plans=args.drop_plans)
    print(f"reclustered {args.workspace}: K={rep.k} concepts trained on the {rep.train_rows:,} of {rep.pool_rows:,} "
          f"pool rows that survive SemDeDup eps={rep.dedup_eps:g}, in {rep.seconds:.1f} s"
          + (f"; deleted plans: {', '.join(rep.dropped_plans)}" if rep.dropped_plans else ""))
    if rep.carried_rules or rep.dropped_rules:
        print(f"concept rules: {rep.carried_rules} carried to the new concepts by member overlap"
              + (f"; {len(rep.dropped_rules)} dropped: " + "; ".join(rep.dropped_rules) if rep.dropped_rules else ""))
    print(summary_text(args.workspace))
    return 0


def cmd_negclip(args: argparse.Namespace) -> int:
    from densprune.pipeline.negclip import score_workspace

    entry = score_workspace(args.workspace, batch=args.batch, draws=args.draws, tau=args.tau, seed=args.seed,
                            device=args.device)
    print(f"negCLIPLoss of {entry['n']:,} pairs ({entry['draws']} draws of batches of {entry['batch']:,}, "
          f"tau {entry['tau']:g}) written to {args.workspace}/embeddings/negclip.npy; plan with --method negclip")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from densprune import db
    from densprune.pipeline.precompute import precompute

    ws = args.workspace or default_demo_workspace()
    if not db.is_complete(ws) or args.force:
        log.info("building the demo workspace in %s (first run)", ws)
        precompute(_precompute_config(args, "demo", ws))
    if args.no_app:
        print(summary_text(ws))
        return 0
    return launch_app(ws, args.port, args.host, allow_hosts=args.allow_host)


def cmd_app(args: argparse.Namespace) -> int:
    from densprune import db

    ws = args.workspace or default_demo_workspace()
    if not db.is_complete(ws):
        if args.workspace is not None:
            print(f"error: no workspace at {ws}; build one with `densprune precompute SOURCE --workspace {ws}`",
                  file=sys.stderr)
            return 2
    return launch_app(ws, args.port, args.host, allow_roots=args.allow_root,
                      allow_custom_models=args.allow_custom_models, allow_hosts=args.allow_host)


def launch_app(ws: Path, port: int, host: str = "127.0.0.1", allow_roots: list[Path] | None = None,
               allow_custom_models: bool = False, allow_hosts: list[str] | None = None) -> int:
    """Run the app (``streamlit run densprune/app/main.py`` through densprune.app.serve, which refuses
    requests for host names other than localhost, IP addresses, ``host`` and ``allow_hosts``) on ``ws``;
    it builds the demo itself when missing.

    ``allow_roots``: the folders whose workspaces the app may open and train in (default: ``ws``'s folder);
    ``allow_custom_models``: free-text model names on the Train page (see densprune.app.policy).
    """
    from densprune.app.policy import app_args
    from densprune.app.serve import ALLOW_HOSTS_ENV

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the app listens on %s: anyone who can reach port %d can browse this workspace, save plans "
                    "and exports, and start training", host, port)
    names = [*(allow_hosts or []), host]
    env = {**os.environ, ALLOW_HOSTS_ENV: ",".join(n for n in names if n and "," not in n)}
    cmd = [sys.executable, "-m", "densprune.app.serve", "run", str(APP_SCRIPT), "--server.port", str(port),
           "--server.address", host, *APP_FLAGS, "--", *app_args(ws, allow_roots, allow_custom_models)]
    log.info("opening the app at http://%s:%d", host, port)
    return subprocess.call(cmd, env=env)


def workspace_info(ws: Path) -> dict:
    """Everything ``densprune info`` shows, as a dict."""
    from densprune import db

    meta = db.load_meta(ws)
    info = {"workspace": str(ws), **meta, "tables": db.counts(ws)}
    cl = db.load_clusters(ws)
    info["complexity"] = {"min": float(cl.complexity.min()), "median": float(cl.complexity.median()),
                          "max": float(cl.complexity.max())}
    top = cl.nlargest(5, "size")[["cluster", "size", "complexity", "label", "zs_label", "zs_similarity"]]
    info["largest_clusters"] = top.astype(object).where(top.notna(), None).to_dict("records")
    info["rejects_by_reason"] = reject_summary(ws).to_dict("records")
    info["caption_flags"] = [{"flag": f, "count": int(c)}
                             for f, c in db.caption_flag_counts(ws).itertuples(index=False)]
    info["eval_contamination"] = None
    if int(meta.get("n_eval") or 0):  # how close the pool still comes to the eval images
        import numpy as np

        from densprune.ingest.eval_split import contamination
        from densprune.workspace import concept_space

        s = db.splits_and_captions(ws)  # in the space decontamination used: the concepts'
        vectors = np.load(concept_space(ws, meta), mmap_mode="r")
        info["eval_contamination"] = contamination(vectors, s["split"].to_numpy(),
                                                   s["caption"].to_numpy())
    return info


def reject_summary(ws: Path):
    """Rejects counted by stage and kind of reason (densprune.ingest.reject_kinds): stage, kind, count, example."""
    from densprune import db
    from densprune.ingest.reject_kinds import summarise_rejects

    return summarise_rejects(db.reject_summary(ws))


def summary_text(ws: Path) -> str:
    from densprune.cluster.labels import shorten
    from densprune.workspace import describe_concept_space

    info = workspace_info(ws)
    emb = f"{info['embedder']} ({info['model']}{' / ' + info['pretrained'] if info.get('pretrained') else ''})"
    lines = [
        f"workspace      {info['workspace']}",
        f"source         {info['source']} ({info['source_kind']})",
        f"samples        {info['n_samples']:,} ({info['n_pool']:,} pool, {info['n_eval']:,} held-out eval), "
        f"{info['n_rejects']:,} rejected",
        f"embedder       {emb}, {info['image_dim']}-d"
        + ("" if info["has_clip_scores"] else f"  [no CLIP scores: {_no_clip_reason(info)}]"),
        f"concepts from  {describe_concept_space(info)}",
        f"concepts       K={info['k']} (seed {info['seed']}), complexity min {info['complexity']['min']:.4f} / "
        f"median {info['complexity']['median']:.4f} / max {info['complexity']['max']:.4f}",
        f"plans          {info['tables']['plans']}",
        f"built          {info['created']} by densprune {info['densprune_version']} "
        f"in {info['timings_s'].get('total', 0):.1f} s",
    ]
    ec = info["eval_contamination"]
    if ec is not None:
        dec = info.get("decontaminate")
        how = f"decontaminated at cosine {dec:g}" if dec is not None else "not decontaminated"
        lines.append(f"eval copies    {how} ({ec['set_aside']:,} pool rows set aside; `precompute --decontaminate "
                     f"SIM`); the {ec['eval']:,} eval images with a pool image at cosine >= "
                     + ", ".join(f"{b['similarity']:g}: {b['eval_with_copy']:,} ({b['pool_copies']:,} pool rows)"
                                 for b in ec["by_similarity"])
                     + f"; {ec['same_caption_pool_rows']:,} pool rows share an eval image's caption")
    if info["rejects_by_reason"]:
        lines.append("rejected by reason:")
        lines += [f"  {r['count']:>6,}  {r['stage']:<7} {r['kind']}" for r in info["rejects_by_reason"]]
    if info["caption_flags"]:
        lines.append("flagged captions (the samples are kept):")
        lines += [f"  {r['count']:>6,}  caption {r['flag']} (decoded with U+FFFD replacement)"
                  for r in info["caption_flags"]]
    lines.append("largest concepts:")
    for c in info["largest_clusters"]:
        zs = f"  [zero-shot: {shorten(c['zs_label'], 40)} {c['zs_similarity']:.2f}]" if c.get("zs_label") else ""
        cx = "n/a" if c["complexity"] is None else f"{c['complexity']:.4f}"  # NaN: an empty concept
        lines.append(f"  #{c['cluster']:<4} {c['size']:>6,}  complexity {cx}  "
                     f"{shorten(c['label'], 60)}{zs}")
    return "\n".join(lines)


def _no_clip_reason(info: dict) -> str:
    if info.get("embedder") == "released":
        return "the source has neither caption vectors nor a similarity column"
    return "offline embedder"


def cmd_info(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(workspace_info(args.workspace), indent=2, default=str))
    else:
        print(summary_text(args.workspace))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from densprune.pipeline.verify import verify_export, verify_workspace

    problems = verify_workspace(args.workspace)
    if args.repair:
        from densprune.pipeline.verify import repair

        for line in repair(args.workspace, problems):
            print(line)
        problems = verify_workspace(args.workspace)
    for path in args.export:
        problems += verify_export(path)
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {args.workspace} holds together" + (f" (and {len(args.export)} export(s))" if args.export else ""))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densprune`` console script."""
    from densprune.db import WorkspaceBusy, WorkspaceNotFound
    from densprune.embed.models import WeightsUnavailable
    from densprune.ingest.sources import SourceError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for chatty in ("faiss.loader", "numba", "PIL"):  # AVX fallbacks, JIT passes, PNG chunks: not news under -v
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (WeightsUnavailable, SourceError, WorkspaceNotFound, WorkspaceBusy, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: no space left on the device{where}: the command stopped and removed its temporary files "
              "(what was there before is unchanged); free some space and run it again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
