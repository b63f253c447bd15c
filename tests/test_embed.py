"""The batched embedding stage against a per-sample reference; device decoding (run on the CPU here);
the writer thread and its callback; thumbnails."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode, make_image
from PIL import Image

from densprune.embed.batches import BatchDataset
from densprune.embed.models import OfflineEmbedder, OpenClipEmbedder, pixel_features
from densprune.embed.pixels import decode_jpegs, resize_crop
from densprune.embed.runner import EmbedSettings, embed_source, uses_device_decode
from densprune.ingest.images import ImageDecodeError, decode_image
from densprune.ingest.sources import list_source, read_bytes


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a small shared machine, more threads than free cores slow tiny models 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> OpenClipEmbedder:
    logging.getLogger("densprune.embed.models").setLevel(logging.ERROR)
    return OpenClipEmbedder("densprune-tiny", pretrained="none", device="cpu")


def _load_shards(paths: list[Path]) -> dict[str, np.ndarray]:
    """The shards' arrays concatenated: idx, ok, reasons, image, [text], width, height."""
    parts: dict[str, list] = {}
    for p in paths:
        with np.load(p) as z:
            for k in ("idx", "ok", "reasons", "image", "text", "width", "height"):
                if k in z and (k not in ("image", "text") or z["ok"].any()):
                    parts.setdefault(k, []).append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _reference(refs, embed_one) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """The stage as it was, one sample at a time: decode_image, then ``embed_one(img, caption)``."""
    vectors, rejects = {}, {}
    for i, r in enumerate(refs):
        try:
            vectors[i] = embed_one(decode_image(read_bytes(r.loc)), r.caption)
        except ImageDecodeError as exc:
            rejects[i] = str(exc)
    return vectors, rejects


def _openclip_one(emb: OpenClipEmbedder):
    """Per-sample open_clip reference: the full preprocess (PIL -> normalised float) and the tokenizer."""
    def one(img: Image.Image, caption: str) -> np.ndarray:
        with torch.inference_mode():
            x = emb.net.encode_image(emb.preprocess(img)[None])
            t = emb.net.encode_text(emb.tokenizer([caption]))
        return np.concatenate([torch.nn.functional.normalize(x, dim=-1)[0].numpy(),
                               torch.nn.functional.normalize(t, dim=-1)[0].numpy()])
    return one


def _check_against_reference(got: dict, vectors: dict, rejects: dict, atol: float, reason_prefix_only=False) -> None:
    ok_idx = got["idx"][got["ok"]]
    assert list(ok_idx) == sorted(vectors)
    bad = {int(i): str(r) for i, r in zip(got["idx"][~got["ok"]], got["reasons"][~got["ok"]])}
    assert sorted(bad) == sorted(rejects)
    for i, reason in rejects.items():  # "<_io.BytesIO object at 0x...>" differs between processes
        assert bad[i].split(" <")[0] == reason.split(" <")[0]
    have = got["image"] if "text" not in got else np.concatenate([got["image"], got["text"]], axis=1)
    np.testing.assert_allclose(have, np.stack([vectors[i] for i in ok_idx]), atol=atol)


def test_offline_batches_match_per_sample_reference(image_folder, tmp_path):
    refs = list_source(str(image_folder)).refs
    shards = embed_source(refs, OfflineEmbedder(), tmp_path / "w",
                          EmbedSettings(batch_size=5, workers=2, shard_size=16), progress=False)
    got = _load_shards(shards)
    vectors, rejects = _reference(refs, lambda img, cap: pixel_features(img))
    assert len(rejects) == 1 and "cannot decode" in next(iter(rejects.values()))
    _check_against_reference(got, vectors, rejects, atol=1e-6)
    sizes = {r.key: Image.open(io.BytesIO(read_bytes(r.loc))).size for r in refs if not r.key.endswith("broken.jpg")}
    assert [tuple(s) for s in np.stack([got["width"], got["height"]], 1)] == \
        [sizes[refs[i].key] for i in got["idx"][got["ok"]]]


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_openclip_batches_match_per_sample_reference(image_folder, tmp_path, tiny, decode):
    """PIL decoding gives the per-sample vectors to float precision; decoding JPEGs with torchvision
    (the GPU path, run on the CPU here) resizes on tensors: pixels within 1/255, vectors within 2e-3."""
    refs = list_source(str(image_folder)).refs
    settings = EmbedSettings(batch_size=7, workers=2, shard_size=20, decode=decode)
    got = _load_shards(embed_source(refs, tiny, tmp_path / "w", settings, progress=False))
    vectors, rejects = _reference(refs, _openclip_one(tiny))
    _check_against_reference(got, vectors, rejects, atol=1e-5 if decode == "cpu" else 2e-3)


def test_demo_batches_match_per_sample_reference(tmp_path, tiny):
    refs = list_source("demo").refs[:96]
    vectors, rejects = _reference(refs, _openclip_one(tiny))
    for decode in ("cpu", "device"):
        settings = EmbedSettings(batch_size=32, workers=2, shard_size=64, decode=decode)
        got = _load_shards(embed_source(refs, tiny, tmp_path / decode, settings, progress=False))
        _check_against_reference(got, vectors, rejects, atol=1e-5 if decode == "cpu" else 2e-3)
    off = _load_shards(embed_source(refs, OfflineEmbedder(), tmp_path / "off", EmbedSettings(batch_size=32, workers=2),
                                    progress=False))
    _check_against_reference(off, *_reference(refs, lambda img, cap: pixel_features(img)), atol=1e-6)


def test_device_decoding_takes_only_complete_rgb_jpegs(image_folder, tiny):
    refs = list_source(str(image_folder)).refs
    ds = BatchDataset(refs, tiny.worker_prep(), max_pixels=10**8, thumb_size=128, thumbnails=True, device_decode=True)
    batch = ds[list(range(len(refs)))]
    to_device = {refs[int(batch.idx[p])].key for p in batch.jpeg_rows}
    on_cpu = {refs[int(batch.idx[p])].key for p in batch.pixel_rows}
    assert to_device == {r.key for r in refs if r.key.endswith(".jpg") and "broken" not in r.key}
    assert on_cpu == {r.key for r in refs if r.key.endswith(".png")}
    assert batch.pixels.dtype == torch.uint8 and batch.pixels.shape[1:] == (3, 64, 64)
    assert batch.tokens.shape == (len(refs), 32)
    assert [r for r in batch.reasons if r] == [batch.reasons[[r.key for r in refs].index("red/broken.jpg")]]
    assert np.diff(batch.thumb_offsets)[[bool(r) for r in batch.reasons]].tolist() == [0]


def test_resize_crop_matches_the_pil_preprocess(tiny):
    rng = np.random.default_rng(0)
    prep = tiny.worker_prep()
    for w, h in [(64, 64), (100, 80), (300, 97), (50, 40), (1000, 700)]:
        xx = np.mgrid[:h, :w][1]
        arr = np.stack([np.sin(xx / 7 + c) * 100 + 120 + rng.normal(0, 10, (h, w)) for c in range(3)], -1)
        data = encode(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), "JPEG")
        pil = prep.image(decode_image(data))
        images, reasons = decode_jpegs(torch.frombuffer(bytearray(data), dtype=torch.uint8), np.array([0, len(data)]),
                                       torch.device("cpu"))
        assert reasons == [""]
        t = resize_crop(images, tiny.pixel_spec)[0]
        assert t.shape == pil.shape == (3, 64, 64)
        assert (t.int() - pil.int()).abs().max() <= 1, (w, h)


def _bogus_huffman(jpeg: bytes) -> bytes:
    """A JPEG whose header reads fine (size, mode, EOI at the end) but whose Huffman table is invalid."""
    i = jpeg.index(b"\xff\xc4")
    return jpeg[:i + 5] + b"\xff" * 16 + jpeg[i + 21:]


def test_decode_jpegs_reports_each_bad_file():
    good = encode(make_image((200, 0, 0), "circle"), "JPEG")
    bad = _bogus_huffman(good)
    data = torch.frombuffer(bytearray(good + bad + good), dtype=torch.uint8)
    offsets = np.cumsum([0, len(good), len(bad), len(good)])
    images, reasons = decode_jpegs(data, offsets, torch.device("cpu"))
    assert images[1] is None and "cannot decode image on cpu" in reasons[1]
    assert images[0].shape == images[2].shape == (3, 64, 64) and reasons[0] == reasons[2] == ""


def test_device_failure_falls_back_to_pil_and_records_its_reason(image_folder, tmp_path, tiny):
    """A JPEG that passes the header checks but not decoding is rejected with PIL's reason, as before."""
    (image_folder / "red" / "bogus.jpg").write_bytes(
        _bogus_huffman((image_folder / "red" / "circle_0.jpg").read_bytes()))
    refs = list_source(str(image_folder)).refs
    vectors, rejects = _reference(refs, _openclip_one(tiny))
    assert len(rejects) == 2
    for decode in ("cpu", "device"):
        got = _load_shards(embed_source(refs, tiny, tmp_path / decode,
                                        EmbedSettings(batch_size=16, workers=0, decode=decode), progress=False))
        _check_against_reference(got, vectors, rejects, atol=2e-3)


def test_device_decoding_is_chosen_by_mode_and_device(tiny):
    assert not uses_device_decode("auto", tiny)  # the model is on the CPU
    assert uses_device_decode("device", tiny) and not uses_device_decode("cpu", tiny)
    assert not uses_device_decode("device", OfflineEmbedder())  # features come from PIL images
    with pytest.raises(ValueError, match="decode"):
        EmbedSettings(decode="gpu")


def test_on_shard_callback_stops_the_stage_after_exactly_n_shards(image_folder, tmp_path):
    refs = list_source(str(image_folder)).refs
    seen = []

    def on_shard(n: int, path: Path) -> None:
        seen.append(path.name)
        if n == 2:
            raise RuntimeError("stop here")

    wd = tmp_path / "w"
    with pytest.raises(RuntimeError, match="stop here"):
        embed_source(refs, OfflineEmbedder(), wd, EmbedSettings(batch_size=4, workers=2, shard_size=8), progress=False,
                     on_shard=on_shard)
    assert seen == ["shard-00000.npz", "shard-00001.npz"]
    assert sorted(p.name for p in wd.glob("shard-*.npz")) == seen  # nothing written after the error
    rest = []
    embed_source(refs, OfflineEmbedder(), wd, EmbedSettings(batch_size=4, workers=2, shard_size=8), progress=False,
                 on_shard=lambda n, p: rest.append(p.name))
    assert rest == [f"shard-{k:05d}.npz" for k in range(2, 7)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_batches_pin_their_tensors(image_folder, tiny):
    refs = list_source(str(image_folder)).refs[:8]
    ds = BatchDataset(refs, tiny.worker_prep(), max_pixels=10**8, thumb_size=128, thumbnails=False, device_decode=True)
    pinned = ds[list(range(8))].pin_memory()
    assert pinned.tokens.is_pinned() and pinned.jpeg_data.is_pinned()


def test_prefetcher_hands_over_in_order_and_raises_the_loaders_error():
    from densprune.embed.runner import Prefetcher

    def loader():
        yield 1
        yield 2
        raise OSError("disk gone")

    feeder = Prefetcher(loader(), lambda x: type("RB", (), {"ready": None, "value": x * 10})(), torch.device("cpu"))
    feeder.start()
    got = []
    with pytest.raises(OSError, match="disk gone"):
        for rb in feeder:
            got.append(rb.value)
    feeder.stop()
    assert got == [10, 20] and not feeder.is_alive()


def test_weights_load_a_training_checkpoint_into_a_local_dir_model(tiny, tmp_path):
    """--weights takes open_clip_train's checkpoint (``state_dict`` with DDP's ``module.`` prefix) for
    the model it was trained as, ``local-dir:`` included; another model is refused with guidance."""
    import json

    import densprune.embed.models as models
    from densprune.embed.models import WeightsUnavailable

    def local_dir(name: str, cfg: dict) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
        return tmp_path / name

    cfg = json.loads((Path(models.__file__).parent / "model_configs" / "densprune-tiny.json").read_text())
    model_dir = local_dir("model", cfg)
    other = local_dir("other", {**cfg, "vision_cfg": {**cfg["vision_cfg"], "layers": cfg["vision_cfg"]["layers"] + 1}})
    trained = {k: v + 0.5 if v.is_floating_point() else v for k, v in tiny.net.state_dict().items()}
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in trained.items()}}, ckpt)
    emb = OpenClipEmbedder(f"local-dir:{model_dir}", weights=str(ckpt), device="cpu")
    got = emb.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in trained.items())
    with pytest.raises(WeightsUnavailable, match="does not fit open_clip model local-dir:.*other"):
        OpenClipEmbedder(f"local-dir:{other}", weights=str(ckpt), device="cpu")


def test_both_embedders_meet_the_embedder_protocol(tiny):
    from densprune.embed.models import Embedder, OfflineEmbedder, WorkerPrep

    for emb in (OfflineEmbedder(), tiny):
        assert isinstance(emb, Embedder), type(emb)
        assert isinstance(emb.worker_prep(), WorkerPrep)
        assert isinstance(emb.fingerprint, str) and emb.fingerprint
