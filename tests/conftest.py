"""Shared fixtures: small synthetic sources and the demo workspace (built once per test session)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densprune.workspace import image_vectors, text_vectors

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 20)}
SHAPES = ("circle", "square")


def make_image(color: tuple[int, int, int], shape: str, size: int = 64, seed: int = 0,
               mode: str = "RGB") -> Image.Image:
    """A small synthetic clip-art-like image: a coloured shape with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 + rng.normal(0, 2, 2)
    if shape == "circle":
        inside = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size / 3) ** 2
    else:
        inside = (abs(yy - c[0]) < size / 3) & (abs(xx - c[1]) < size / 3)
    rgb = np.full((size, size, 3), 255, np.float64)
    rgb[inside] = color
    rgb += rng.normal(0, 6, rgb.shape)
    arr = np.clip(rgb, 0, 255).astype(np.uint8)
    if mode == "RGBA":
        alpha = np.where(inside, 255, 0).astype(np.uint8)
        arr = arr.copy()
        arr[~inside] = 0  # black but fully transparent: must come out white
        return Image.fromarray(np.dstack([arr, alpha]), "RGBA")
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """48 images in 4 colour folders (PNG with alpha, JPEG), captions in sidecar .txt, one corrupt file."""
    root = tmp_path / "images"
    i = 0
    for color, rgb in COLORS.items():
        d = root / color
        d.mkdir(parents=True)
        for shape in SHAPES:
            for j in range(6):
                img = make_image(rgb, shape, seed=i, mode="RGBA" if j % 2 else "RGB")
                ext = "png" if j % 2 else "jpg"
                (d / f"{shape}_{j}.{ext}").write_bytes(encode(img if ext == "png" else img.convert("RGB"),
                                                              "PNG" if ext == "png" else "JPEG"))
                (d / f"{shape}_{j}.txt").write_text(f"a {color} {shape} number {j}")
                i += 1
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return root


@pytest.fixture
def wds_shards(tmp_path: Path) -> list[Path]:
    """Two img2dataset-style shards (key.jpg + key.txt + key.json, DataComp uids), one sample without image."""
    return make_wds_shards(tmp_path)


def make_wds_shards(tmp_path: Path) -> list[Path]:
    """Write the shards of :func:`wds_shards` into ``tmp_path``."""
    out = []
    n = 0
    for s in range(2):
        path = tmp_path / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for j in range(10):
                key = f"{s:05d}{j:04d}"
                color = list(COLORS)[j % 4]
                members = {
                    f"{key}.jpg": encode(make_image(COLORS[color], SHAPES[j % 2], seed=n), "JPEG"),
                    f"{key}.txt": f"{color} {SHAPES[j % 2]}".encode(),
                    f"{key}.json": json.dumps({"uid": f"{n:032x}", "original_width": 64,
                                               "original_height": 64}).encode(),
                }
                if s == 1 and j == 9:
                    members.pop(f"{key}.jpg")
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                n += 1
        out.append(path)
    return out


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo built once per session by the installed ``densprune demo --no-app`` (offline embedder),
    or $DENSPRUNE_TEST_WORKSPACE."""
    env = os.environ.get("DENSPRUNE_TEST_WORKSPACE")
    if env and (Path(env) / "densprune.duckdb").exists():
        return Path(env)
    from console import run_densprune

    ws = tmp_path_factory.mktemp("demo") / "ws"
    build = run_densprune("demo", "--no-app", "--workspace", ws)  # README's command, as a user types it
    assert build.returncode == 0, f"`densprune demo --no-app --workspace {ws}` failed:\n{build.stderr[-3000:]}"
    return ws


@pytest.fixture(scope="session")
def small_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-image workspace (offline embedder, K=4; two empty files and one non-image rejected) with plans
    ``half`` and ``all``. Tests that change it work on a copy."""
    from densprune.embed.runner import EmbedSettings
    from densprune.pipeline.config import PrecomputeConfig
    from densprune.pipeline.precompute import precompute
    from densprune.prune import plan_index, plans
    from densprune.prune.selection import PlanParams

    root = tmp_path_factory.mktemp("verify") / "images"
    for i, (color, rgb) in enumerate(COLORS.items()):
        (root / color).mkdir(parents=True)
        for j in range(8):
            img = make_image(rgb, SHAPES[j % 2], seed=10 * i + j)
            (root / color / f"s{j}.jpg").write_bytes(encode(img, "JPEG"))
            (root / color / f"s{j}.txt").write_text(f"a {color} {SHAPES[j % 2]}")
    (root / "red" / "empty.jpg").write_bytes(b"")
    (root / "green" / "empty.png").write_bytes(b"")
    (root / "blue" / "text.jpg").write_bytes(b"this is not an image")
    ws = precompute(PrecomputeConfig(source=str(root), workspace=root.parent / "ws", embedder="offline", clusters=4,
                                     layout_rows=1000, eval_per_category=0,
                                     embed=EmbedSettings(batch_size=8, workers=0, shard_size=16)))
    index = plan_index.load_index(ws)
    plans.save_plan(ws, "half", index.compute(PlanParams(keep=0.5)))
    plans.save_plan(ws, "all", index.compute(PlanParams(keep=1.0)))
    return ws


# -- a workspace with a text tower: densprune-tiny open_clip, random weights (seeded), unique captions ---------

CAPTION_WORDS = ("kettle", "violin", "tractor", "lantern", "pelican", "anchor")


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory):
    from densprune.embed.runner import EmbedSettings
    from densprune.pipeline.config import PrecomputeConfig
    from densprune.pipeline.precompute import precompute

    root = tmp_path_factory.mktemp("tinyclip") / "images"
    n = 0
    for color, rgb in COLORS.items():
        (root / color).mkdir(parents=True)
        for j in range(6):
            img = make_image(rgb, SHAPES[j % 2], seed=n)
            (root / color / f"s{j}.jpg").write_bytes(encode(img, "JPEG"))
            (root / color / f"s{j}.txt").write_text(f"a {color} {SHAPES[j % 2]} with a {CAPTION_WORDS[j]}")
            n += 1
    return precompute(PrecomputeConfig(source=str(root), workspace=root.parent / "ws", embedder="openclip",
                                       model="densprune-tiny", pretrained="none", clusters=3, eval_per_category=0,
                                       embed=EmbedSettings(batch_size=8, workers=0)))


@pytest.fixture()
def matched_ws(tiny_ws, tmp_path):
    """A copy of the tiny workspace whose image vectors are its caption vectors: every image built to match
    its own caption, as a trained CLIP would have it."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws)
    np.save(image_vectors(ws), np.load(text_vectors(ws)))
    return ws
