"""Embedding throughput: densprune's embedding stage against a bare open_clip DataLoader loop and the model alone.

    python -m benchmarks.bench_embed --device cpu --model densprune-tiny --images 2048 --batch-size 64 --workers 2
    python -m benchmarks.bench_embed --device cuda --model ViT-B-32 --images 40000 --batch-size 512 --workers 14

(``python -m`` from the checkout's root, so that the checkout's ``densprune`` is the one measured.)

One run measures, interleaved round by round (median of ``--runs`` rounds after one warm-up round):

- ceiling: the model alone on random tensors already on the device (image and text towers);
- bare: an open_clip DataLoader loop over the same shards (PIL decode + open_clip preprocess +
  tokenizer per sample, default collate, pin_memory on CUDA, non-blocking copies, fp16 autocast on CUDA);
- densprune: ``embed_source`` (whole-batch workers, thumbnails per ``--thumbnails``, shards
  written by the writer thread), once per ``--decode`` mode (``device`` = nvJPEG on CUDA);
- the data path of both (``--data-path``): the same loops with the model replaced by nothing
  (bare: batches moved to the device; densprune: pixels normalised on the device, zero vectors).

The input is generated img2dataset-style webdataset shards (``key.jpg`` 256x256 JPEG quality 95 +
``key.txt`` caption + ``key.json``), made from the bundled demo images; the model has random
weights (throughput does not depend on them). Results go to ``benchmarks/results/embed-<device>.md``
with the command that made them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved_times, table  # noqa: E402

from densprune.embed.models import OpenClipEmbedder  # noqa: E402
from densprune.embed.pixels import normalize  # noqa: E402
from densprune.embed.runner import EmbedSettings, embed_source  # noqa: E402
from densprune.ingest.sources import SampleRef, list_source, read_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def make_shards(out: Path, n: int, shards: int = 8, size: int = 256, quality: int = 95) -> list[SampleRef]:
    """Write n img2dataset-style samples in ``shards`` tar files (one process each) and list them."""
    from concurrent.futures import ProcessPoolExecutor

    out.mkdir(parents=True, exist_ok=True)
    per = -(-n // shards)
    jobs = [(out / f"{k:05d}.tar", k * per, min(n, (k + 1) * per), size, quality) for k in range(shards) if k * per < n]
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        list(pool.map(_write_shard, *zip(*jobs)))
    return list_source(str(out)).refs


def _write_shard(path: Path, start: int, end: int, size: int, quality: int) -> None:
    """Samples start..end-1: demo images (mirrored / rotated on later passes, so no two files are
    alike) centre-cropped to size x size, JPEG, with the demo caption and a DataComp-style json."""
    demo = list_source("demo").refs
    turns = [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270]
    with tarfile.open(path, "w") as tf:
        for i in range(start, end):
            ref = demo[i % len(demo)]
            img = Image.open(io.BytesIO(read_bytes(ref.loc))).convert("RGB")
            if i >= len(demo):
                img = img.transpose(turns[(i // len(demo) - 1) % 3])
            scale = size / min(img.size)
            img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                             Image.Resampling.BICUBIC)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            buf = io.BytesIO()
            img.crop((left, top, left + size, top + size)).save(buf, "JPEG", quality=quality)
            members = {f"{i:09d}.jpg": buf.getvalue(), f"{i:09d}.txt": ref.caption.encode(),
                       f"{i:09d}.json": json.dumps({"uid": f"{i:032x}", "caption": ref.caption,
                                                    "width": size, "height": size}).encode()}
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


class BareDataset(Dataset):
    """What an open_clip training loader does per sample: PIL decode, preprocess, tokenize one caption."""

    def __init__(self, refs: list[SampleRef], preprocess, tokenizer) -> None:
        self.refs, self.preprocess, self.tokenizer = refs, preprocess, tokenizer

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        img = Image.open(io.BytesIO(read_bytes(self.refs[i].loc))).convert("RGB")
        return self.preprocess(img), self.tokenizer([self.refs[i].caption])[0]


class DataPathOnly:
    """An embedder's data path without its model: pixels are normalised on the device, vectors are zeros."""

    def __init__(self, emb: OpenClipEmbedder) -> None:
        import open_clip

        self.emb = emb
        self.dim = open_clip.get_model_config(emb.model_name)["embed_dim"]

    def __getattr__(self, name: str):
        return getattr(self.emb, name)

    def embed(self, pixels: torch.Tensor, tokens: torch.Tensor):
        if pixels.dtype == torch.uint8:
            pixels = normalize(pixels, self.emb.mean, self.emb.std)
        z = torch.zeros((pixels.shape[0], self.dim), device=pixels.device)
        return z, z


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def runners(args: argparse.Namespace, refs: list[SampleRef], emb: OpenClipEmbedder) -> dict:
    """name -> a function doing one full pass over ``refs`` (or, for the ceiling, as many batches)."""
    dev, net, amp = emb.device, emb.net, emb.device.type == "cuda"
    n, bs = len(refs), args.batch_size

    def model(pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            i, t = net.encode_image(pixels), net.encode_text(tokens)
        return torch.nn.functional.normalize(i.float(), dim=-1), torch.nn.functional.normalize(t.float(), dim=-1)

    size = emb.pixel_spec.size if emb.pixel_spec else 224
    rand_pix = torch.randn((bs, 3, size, size), device=dev)
    rand_tok = torch.randint(0, 49407, (bs, emb.tokenizer(["x"]).shape[1]), device=dev)

    def ceiling() -> None:
        for s in range(0, n, bs):
            m = min(bs, n - s)
            model(rand_pix[:m], rand_tok[:m])
        _sync(dev)

    def bare(with_model: bool):
        def run() -> None:
            loader = DataLoader(BareDataset(refs, emb.preprocess, emb.tokenizer), batch_size=bs,
                                num_workers=args.workers, pin_memory=amp)
            for pixels, tokens in loader:
                pixels, tokens = pixels.to(dev, non_blocking=amp), tokens.to(dev, non_blocking=amp)
                if with_model:
                    i, t = model(pixels, tokens)
                    i.cpu(), t.cpu()
            _sync(dev)
        return run

    def ours(decode: str, with_model: bool):
        settings = EmbedSettings(batch_size=bs, workers=args.workers, shard_size=args.shard_size, decode=decode,
                                 thumbnails=args.thumbnails == "all", dtype="float16")
        embedder = emb if with_model else DataPathOnly(emb)

        def run() -> None:
            wd = Path(tempfile.mkdtemp(prefix="bench-embed-"))
            try:
                embed_source(refs, embedder, wd, settings, progress=False)
            finally:
                shutil.rmtree(wd)
        return run

    fns = {"ceiling: model on random device tensors": ceiling, "bare open_clip loop": bare(True)}
    fns.update({f"densprune (decode={d})": ours(d, True) for d in args.decode})
    if args.data_path:
        fns["bare loader, no model"] = bare(False)
        fns.update({f"densprune data path (decode={d}), no model": ours(d, False) for d in args.decode})
    return fns


def thumbnail_costs(refs: list[SampleRef], n: int = 200) -> str:
    """Per-image cost and size of a 128 px thumbnail of the first n samples, one core: the source reused
    as is (densprune for small JPEG/WebP), a fast JPEG re-encode (densprune otherwise), and the WebP
    method 4 + LANCZOS encode densprune made for every image before."""
    from densprune.ingest.images import decode_image, thumbnail_bytes

    def old_webp(img: Image.Image) -> bytes:
        thumb = img.copy()
        thumb.thumbnail((128, 128), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        thumb.save(buf, format="WEBP", quality=80, method=4)
        return buf.getvalue()

    datas = [read_bytes(r.loc) for r in refs[:n]]
    images = [decode_image(d) for d in datas]
    ways = {"source reused (JPEG/WebP <= 256 px, <= 64 KB)": lambda im, d: thumbnail_bytes(im, 128, source=d),
            "JPEG q80 re-encode (box reduce + bilinear)": lambda im, d: thumbnail_bytes(im, 128),
            "before: WebP method 4 + LANCZOS": lambda im, d: old_webp(im)}
    rows = []
    for name, fn in ways.items():
        best, sizes = float("inf"), []
        for _ in range(3):
            t = time.perf_counter()
            sizes = [len(fn(im, d)) for im, d in zip(images, datas)]
            best = min(best, (time.perf_counter() - t) / len(images))
        rows.append([name, f"{best * 1e3:.3f}", f"{np.mean(sizes) / 1000:.1f}", f"{np.mean(sizes) * 1e8 / 1e9:,.0f}"])
    return table(["thumbnail (decoded 256 px image in, 128 px out)", "ms / image (best of 3)", "KB / image",
                  "GB per 100M rows"], rows)


def report(args: argparse.Namespace, refs: list[SampleRef], emb: OpenClipEmbedder, times: dict) -> str:
    n = len(refs)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / v for k, v in med.items()}
    bare, bare_data = rate["bare open_clip loop"], rate.get("bare loader, no model")
    rows = []
    for name, r in rate.items():
        vs = bare_data if ("no model" in name and bare_data) else bare
        rows.append([name, f"{r:,.0f}", f"{r / vs:.2f}x" if "ceiling" not in name else "-",
                     " / ".join(f"{n / t:,.0f}" for t in times[name])])
    jpeg = np.mean([r.loc[3] for r in refs])
    card = torch.cuda.get_device_name(emb.device) if emb.device.type == "cuda" else platform.processor() or "cpu"
    load = f"; load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    head = (f"`python -m benchmarks.bench_embed {' '.join(sys.argv[1:])}`\n\n"
            f"device: {emb.device.type} ({card}); {os.cpu_count()} CPU cores; torch {torch.__version__}; "
            f"model {args.model} (random weights), {n:,} img2dataset-style samples (256 px JPEG q95, mean "
            f"{jpeg / 1000:.1f} KB, + caption), batch {args.batch_size}, {args.workers} workers, "
            f"thumbnails {args.thumbnails}; {torch.get_num_threads()} torch threads in the main process; median of "
            f"{args.runs} interleaved rounds after a warm-up round{load}.\n\n")
    return head + table(["what", "pairs/s (median)", "vs bare (data path: vs bare loader)", "each round"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default="densprune-tiny")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--decode", default=None, help="densprune decode modes, comma-separated (default: cpu on "
                                                    "the CPU, cpu,device on CUDA)")
    ap.add_argument("--thumbnails", choices=["all", "none"], default="all",
                    help="densprune makes thumbnails of every row (the default up to 1M rows) or none")
    ap.add_argument("--no-data-path", dest="data_path", action="store_false", help="skip the no-model modes")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process, for "
                                                              "every mode (default: torch's choice)")
    ap.add_argument("--data", type=Path, default=None,
                    help="folder for the generated shards (kept; reused when present)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/embed-DEVICE.md)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.decode = (args.decode or ("cpu,device" if args.device == "cuda" else "cpu")).split(",")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU here")
    data = args.data or Path(tempfile.mkdtemp(prefix="bench-embed-data-"))
    refs = list_source(str(data)).refs if any(data.glob("*.tar")) else make_shards(data, args.images)
    refs = refs[:args.images]
    emb = OpenClipEmbedder(args.model, pretrained="none", device=args.device)
    times = interleaved_times(runners(args, refs, emb), args.runs)  # a warm-up round first (model init, cuDNN)
    text = report(args, refs, emb, times) + "\n\n" + thumbnail_costs(refs)
    print(text)
    out = args.out or RESULTS / f"embed-{args.device}.md"
    out.write_text(text + "\n")
    if args.data is None:
        shutil.rmtree(data)


if __name__ == "__main__":
    main()
