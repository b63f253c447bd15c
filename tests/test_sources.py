"""Source listing and image decoding."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import encode, make_image
from PIL import Image

from densprune.ingest.images import ImageDecodeError, decode_image, thumbnail_bytes
from densprune.ingest.sources import SourceError, list_source, read_bytes
from densprune.ingest.uids import (
    arrow_uids_to_datacomp,
    normalize_uid,
    sort_pairs,
    uid_from_key,
    uids_to_datacomp,
)


def test_folder_listing_is_stable_with_captions_and_categories(image_folder):
    a = list_source(str(image_folder))
    b = list_source(str(image_folder))
    assert a.kind == "folder" and len(a.refs) == 49
    assert [r.uid for r in a.refs] == [r.uid for r in b.refs]
    assert len({r.uid for r in a.refs}) == 49
    ref = next(r for r in a.refs if r.key == "blue/circle_0.jpg")
    assert ref.caption == "a blue circle number 0"
    assert ref.category == "blue"
    assert ref.uid == uid_from_key("blue/circle_0.jpg")
    assert read_bytes(ref.loc)[:2] == b"\xff\xd8"


def test_csv_listing_rejects_missing_files_with_row(tmp_path, image_folder):
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filepath": [str(image_folder / "red/circle_0.jpg"), "nope.jpg", ""],
                  "caption": ["red", "missing", "empty"]}).to_csv(csv, index=False)
    listing = list_source(str(csv))
    assert len(listing.refs) == 1
    reasons = [r.reason for r in listing.rejects]
    assert any("row 3" in r and "file not found" in r for r in reasons)
    assert any("row 4" in r and "empty" in r for r in reasons)


def test_csv_without_image_column_names_the_flag(tmp_path):
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match="--image-column"):
        list_source(str(csv))


def test_parquet_with_image_bytes(tmp_path):
    df = pd.DataFrame({"uid": [f"{i:032x}" for i in range(3)], "caption": ["x", "y", "z"],
                       "image": [encode(make_image((200, 0, 0), "circle", seed=i), "PNG") for i in range(3)]})
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    listing = list_source(str(path))
    assert [r.uid for r in listing.refs] == list(df.uid)
    assert read_bytes(listing.refs[1].loc) == df.image[1]


def test_webdataset_listing_uses_datacomp_uids_and_rejects_imageless(wds_shards):
    listing = list_source(str(wds_shards[0].parent / "{00000..00001}.tar"))
    assert listing.kind == "webdataset"
    assert len(listing.refs) == 19
    assert listing.refs[3].uid == f"{3:032x}"
    assert listing.refs[3].caption == "yellow square"  # j=3: colour 3, shape 1
    assert len(listing.rejects) == 1 and "no image member" in listing.rejects[0].reason
    data = read_bytes(listing.refs[0].loc)
    assert Image.open(io.BytesIO(data)).size == (64, 64)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        list_source(str(tmp_path / "nothing"))


def test_transparency_goes_onto_white():
    img = decode_image(encode(make_image((0, 0, 255), "circle", mode="RGBA"), "PNG"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert tuple(arr[0, 0]) == (255, 255, 255)  # transparent black corner -> white
    assert arr[32, 32, 2] > 150 and arr[32, 32, 0] < 100


def test_pixel_cap_and_corrupt_images_are_rejected_with_reason():
    big = encode(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(ImageDecodeError, match="exceeds --max-pixels"):
        decode_image(big, max_pixels=100_000)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_image(b"\x89PNG garbage")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_probe_image_gives_the_reasons_decode_image_gives(monkeypatch):
    from densprune.ingest.images import probe_image

    jpeg = encode(make_image((0, 0, 200), "circle", size=100), "JPEG")
    assert probe_image(jpeg) == ("JPEG", "RGB", 100, 100)
    def same_reason(data: bytes, cap: int, expected: str) -> None:
        with pytest.raises(ImageDecodeError, match=expected) as probed:
            probe_image(data, cap)
        with pytest.raises(ImageDecodeError) as decoded:
            decode_image(data, cap)
        assert str(probed.value).split(" <")[0] == str(decoded.value).split(" <")[0]

    same_reason(b"", 10**8, "empty")
    same_reason(b"\x89PNG garbage", 10**8, "cannot decode")
    same_reason(jpeg, 5000, "exceeds --max-pixels")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # PIL's own limit gives way to --max-pixels
    assert probe_image(jpeg, 10**8) == ("JPEG", "RGB", 100, 100) and decode_image(jpeg, 10**8).size == (100, 100)


def test_thumbnail_is_a_bounded_jpeg_or_the_small_source_itself():
    img = Image.new("RGB", (640, 320), (10, 20, 30))
    data = thumbnail_bytes(img, 128)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and thumb.size == (128, 64)
    small = encode(make_image((0, 200, 0), "circle", size=200), "JPEG")
    assert thumbnail_bytes(decode_image(small), 128, source=small) is small  # <= 2x the size: reused
    webp = encode(make_image((0, 200, 0), "circle", size=256), "WEBP")
    assert thumbnail_bytes(decode_image(webp), 128, source=webp) is webp
    big = encode(make_image((0, 200, 0), "circle", size=300), "JPEG")
    assert Image.open(io.BytesIO(thumbnail_bytes(decode_image(big), 128, source=big))).size == (128, 128)
    png = encode(make_image((0, 200, 0), "circle", size=100), "PNG")
    assert thumbnail_bytes(decode_image(png), 128, source=png)[:2] == b"\xff\xd8"  # PNG: re-encoded


def test_uid_round_trip_datacomp():
    uids = [uid_from_key(f"k{i}") for i in range(50)]
    arr = uids_to_datacomp(uids)
    assert arr.dtype == np.dtype("u8,u8")
    pairs = [tuple(r) for r in arr.tolist()]
    assert pairs == sorted(pairs)
    assert sorted(f"{int(a):016x}{int(b):016x}" for a, b in arr) == sorted(uids)  # how DataComp reads them
    assert normalize_uid("ABCDEF0123456789abcdef0123456789") == "abcdef0123456789abcdef0123456789"
    assert normalize_uid("xyz") is None


def test_arrow_uids_to_datacomp_matches_the_python_path():
    import pyarrow as pa

    uids = [uid_from_key(f"k{i}") for i in range(500)]
    uids[7] = uids[3][:16] + "0" * 16  # equal first halves: ordered by the second
    uids[9] = uids[3][:16] + "f" * 16
    want = uids_to_datacomp(uids)
    chunked = pa.chunked_array([pa.array(uids[:100]), pa.array(uids[100:]).slice(0), pa.array([], pa.string())])
    got = arrow_uids_to_datacomp(chunked)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(arrow_uids_to_datacomp(pa.array(uids).slice(10, 50)), uids_to_datacomp(uids[10:60]))
    assert np.array_equal(arrow_uids_to_datacomp(pa.array([u.upper() for u in uids], pa.large_string())), want)
    assert len(arrow_uids_to_datacomp(pa.array([], pa.string()))) == 0
    with pytest.raises(ValueError, match=r"\(row 102\) is not 32 hex"):
        arrow_uids_to_datacomp(pa.chunked_array([pa.array(uids[:100]), pa.array([uids[0], uids[1], "g" * 32])]))
    with pytest.raises(ValueError, match=r"\(row 1\) is not 32 hex"):
        arrow_uids_to_datacomp(pa.array([uids[0], uids[1][:31]]))
    with pytest.raises(ValueError, match="missing"):
        arrow_uids_to_datacomp(pa.array([uids[0], None]))


def test_sort_pairs_is_lexicographic():
    pairs = np.random.default_rng(0).integers(0, 5, size=(2000, 2)).astype(np.uint64)  # many ties
    order = sort_pairs(pairs)
    assert np.array_equal(pairs[order], pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])
