"""open_clip embedding throughput: densprune's embedding stage against a bare open_clip loop.

    python benchmarks/bench_openclip.py [--model ViT-B-32] [--images 512] [--batch-size 64] [--runs 3]

Both embed the same demo images (images + captions) with the same model, batch size and number of
DataLoader workers. The model is randomly initialised (no weights can be downloaded here): the
throughput of a forward pass does not depend on the weights. densprune additionally decodes with
the pixel cap, makes thumbnails and writes resumable shards. Goal: at least 0.9x the bare loop.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved_medians, save_result, table  # noqa: E402

from densprune.embed.models import OpenClipEmbedder  # noqa: E402
from densprune.embed.runner import EmbedSettings, embed_source  # noqa: E402
from densprune.ingest.sources import list_source, read_bytes  # noqa: E402


class BareDataset(Dataset):
    def __init__(self, refs, preprocess, tokenizer) -> None:
        self.refs, self.preprocess, self.tokenizer = refs, preprocess, tokenizer

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        img = Image.open(io.BytesIO(read_bytes(self.refs[i].loc))).convert("RGB")
        return self.preprocess(img), self.tokenizer([self.refs[i].caption])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/openclip.md")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    refs = list_source("demo").refs[: args.images]
    emb = OpenClipEmbedder(model=args.model, pretrained="none")
    net = emb.net

    def bare() -> None:
        loader = DataLoader(BareDataset(refs, emb.preprocess, emb.tokenizer), batch_size=args.batch_size,
                            num_workers=args.workers)
        with torch.inference_mode():
            for pixels, tokens in loader:
                i = torch.nn.functional.normalize(net.encode_image(pixels), dim=-1)
                t = torch.nn.functional.normalize(net.encode_text(tokens), dim=-1)
                (i * t).sum(-1).numpy()

    def ours() -> None:
        wd = Path(tempfile.mkdtemp())
        try:
            embed_source(refs, emb, wd, EmbedSettings(batch_size=args.batch_size, workers=args.workers, shard_size=4096))
        finally:
            shutil.rmtree(wd)

    med = interleaved_medians({"bare": bare, "ours": ours}, args.runs)
    t_bare, t_ours = med["bare"], med["ours"]
    n = len(refs)
    text = table(["model", "images", "batch", "bare open_clip (img/s)", "densprune (img/s)", "ratio"],
                 [[args.model, n, args.batch_size, f"{n / t_bare:.1f}", f"{n / t_ours:.1f}", f"{t_bare / t_ours:.2f}x"]])
    print(text)
    print(f"wrote {save_result(text, args.out, 'openclip.md')}")


if __name__ == "__main__":
    main()
