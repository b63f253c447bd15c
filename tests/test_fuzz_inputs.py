"""Hostile input, fuzzed: hypothesis writes broken sources of every kind densprune ingests and runs each
through the real ``densprune precompute`` path (offline embedder, K = 2, a few dozen rows).

Invariant for every example: no crash, or, for a whole-file structural error (wrong dims, row counts
that differ, a non-float array), a ReleasedError naming the file; and every input row ends in exactly
one of ``samples`` or ``rejects`` (with a reason), matched by key. Captions that are not valid UTF-8
are decoded with U+FFFD replacement and flagged in ``samples.caption_flag``.

docs/reliability.md ("Hostile input") lists the cases and their outcomes.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COLORS, SHAPES, encode, make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densprune import db
from densprune.embed.settings import EmbedSettings
from densprune.ingest.released import ReleasedError
from densprune.ingest.text import INVALID_UTF8
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=10, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MIN_GOOD = 4  # valid images every source holds, so that K = 2 concepts can be trained


def _valid_images() -> list[tuple[str, bytes]]:
    """(extension, bytes) of small distinct valid images: JPEG, PNG with alpha, GIF, WebP."""
    out = []
    for i, (color, rgb) in enumerate(COLORS.items()):
        img = make_image(rgb, SHAPES[i % 2], size=32, seed=i)
        out += [("jpg", encode(img, "JPEG")), ("png", encode(make_image(rgb, SHAPES[i % 2], 32, i, "RGBA"), "PNG")),
                ("gif", encode(img.convert("P"), "GIF")), ("webp", encode(img, "WEBP"))]
    return out


VALID = _valid_images()


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with a few bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def image_payloads(draw) -> tuple[str, bytes, bool]:
    """(extension, bytes, decodable): a valid image, or a broken one (garbage, empty, truncated, a
    header declaring too many pixels, another format's bytes under a wrong extension)."""
    ext, data = draw(st.sampled_from(VALID))
    kind = draw(st.sampled_from(["valid", "wrong_ext", "empty", "garbage", "truncated", "huge", "magic_only"]))
    if kind == "valid":
        return ext, data, True
    if kind == "wrong_ext":  # decodable whatever the name says
        return draw(st.sampled_from([e for e in ("jpg", "png", "webp", "gif") if e != ext])), data, True
    if kind == "empty":
        return ext, b"", False
    if kind == "garbage":
        return ext, draw(st.binary(min_size=1, max_size=300)), False
    if kind == "truncated":
        return ext, data[:draw(st.integers(1, max(1, len(data) // 2)))], False
    if kind == "huge":
        side = draw(st.integers(11_000, 60_000))
        return "png", huge_png(side, side), False
    return ext, data[:12] + draw(st.binary(max_size=40)), False


# captions: empty, very long, control characters, invalid UTF-8, ordinary text
CAPTIONS = st.one_of(
    st.just(b""),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda s, n: (s * n).encode("utf-8", "surrogatepass"), st.text(min_size=1, max_size=5),
              st.integers(2000, 40_000)),
    st.lists(st.sampled_from([b"\x00", b"\x07", b"\x1b[31m", b"\r", b"\n", b"\t", b"\x7f", b"word"]),
             max_size=12).map(b"".join),
    st.binary(max_size=60),  # often not UTF-8
    st.builds(lambda a, b: a.encode() + b"\xff\xfe\xc3" + b.encode(), st.text(max_size=10), st.text(max_size=10)),
)


def expected_caption(data: bytes) -> tuple[str, str | None]:
    """What densprune stores for a caption read as bytes: UTF-8 with U+FFFD replacement, and its flag."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), INVALID_UTF8


def build(source: Path | str, ws: Path, **kw) -> Path:
    """The real precompute (offline embedder, K = 2) of ``source`` into ``ws``."""
    return precompute(PrecomputeConfig(source=str(source), workspace=ws, embedder="offline", clusters=2,
                                       layout_rows=64, eval_per_category=0, niter=5,
                                       embed=EmbedSettings(batch_size=16, workers=0, shard_size=32), **kw))


def tables(ws: Path):
    samples = db.query_df(ws, "SELECT key, uid, caption, caption_flag FROM samples ORDER BY row_idx")
    rejects = db.load_rejects(ws)
    assert (rejects.reason.str.len() > 0).all(), "a reject without a reason"
    assert len(db.query_df(ws, "SELECT DISTINCT uid FROM samples")) == len(samples)
    return samples, rejects


def assert_partition(samples, rejects, keys: list[str]) -> None:
    """Every input key ends in exactly one of samples and rejects; nothing else is there."""
    got_s, got_r = list(samples.key), list(rejects.key)
    assert len(got_s) + len(got_r) == len(keys), (len(got_s), len(got_r), len(keys))
    assert sorted(got_s + got_r) == sorted(keys)
    assert not set(got_s) & set(got_r)


# --------------------------------------------------------------------------------------------
# a folder of images with .txt sidecars
# --------------------------------------------------------------------------------------------

NAMES = st.one_of(st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
                  st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")))


@FUZZ
@given(st.lists(st.tuples(image_payloads(), st.one_of(st.none(), CAPTIONS), NAMES), min_size=1, max_size=14))
def test_folder_of_broken_images_and_captions(rows):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        keys, captions = [], {}
        good = [((e, d, True), b"ok", b"good") for e, d in VALID[:MIN_GOOD]]
        for i, ((ext, data, _), cap, name) in enumerate(rows + good):
            stem = f"{i:03d}_".encode() + (name if isinstance(name, bytes) else name.encode())
            if stem in (b".", b".."):
                continue
            path = root / stem.decode("utf-8", "surrogateescape")
            path.with_name(path.name + "." + ext).write_bytes(data)
            key = path.name + "." + ext
            keys.append(key)
            if cap is not None:
                path.with_name(path.name + ".txt").write_bytes(cap)
                captions[key] = expected_caption(cap.strip())
        ws = build(root, Path(tmp) / "ws")
        samples, rejects = tables(ws)
        shown = [k.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for k in keys]
        assert_partition(samples, rejects, shown)
        for key, cap, flag in samples[["key", "caption", "caption_flag"]].itertuples(index=False):
            raw = keys[shown.index(key)]
            want, want_flag = captions.get(raw, ("", None))
            assert cap == want.strip()
            assert (flag if isinstance(flag, str) else None) == want_flag


# --------------------------------------------------------------------------------------------
# CSV and parquet tables
# --------------------------------------------------------------------------------------------

PATH_CELLS = st.one_of(st.just("good"), st.just("broken"), st.just(""), st.just("missing.jpg"), st.just("."),
                       st.just("a" * 5000), st.text(max_size=30), st.just("bad\x00path.jpg"))


def _write_images(folder: Path, n_broken: int) -> tuple[list[str], list[str]]:
    """MIN_GOOD valid images and ``n_broken`` garbage ones; their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    good, broken = [], []
    for i, (ext, data) in enumerate(VALID[:MIN_GOOD]):
        (folder / f"g{i}.{ext}").write_bytes(data)
        good.append(f"img/g{i}.{ext}")
    for i in range(n_broken):
        (folder / f"b{i}.jpg").write_bytes(b"\xff\xd8 not really" * i)
        broken.append(f"img/b{i}.jpg")
    return good, broken


def _csv_field(data: bytes) -> bytes:
    return b'"' + data.replace(b'"', b'""') + b'"'


@FUZZ
@given(st.lists(st.tuples(PATH_CELLS, CAPTIONS, st.integers(0, 3)), min_size=1, max_size=12), st.booleans())
def test_csv_with_garbage_paths_captions_and_ragged_lines(rows, tsv):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        good, broken = _write_images(tmp / "img", 3)
        lines, n = [b"filepath,caption,uid"], 0
        records = [(p, c, x) for p, c, x in rows] + [(g, b"fine", 0) for g in good]
        for i, (p, cap, extra) in enumerate(records):
            path = {"good": good[i % len(good)], "broken": broken[i % len(broken)]}.get(p, p)
            fields = [_csv_field(path.encode("utf-8", "surrogatepass")), _csv_field(cap), b"not-a-uid"]
            fields += [b"junk"] * (extra - 1 if extra > 1 else 0)  # extra > 2: a line with too many fields
            lines.append(b",".join(fields))
            n += 1
        sep = b"\t" if tsv else b","
        body = b"\n".join(line.replace(b",", sep) if tsv else line for line in lines) + b"\n"
        src = tmp / ("list.tsv" if tsv else "list.csv")
        src.write_bytes(body)
        samples, rejects = tables(build(src, tmp / "ws"))
        assert len(samples) + len(rejects) == n, (len(samples), len(rejects), n)


@st.composite
def parquet_tables(draw) -> tuple[pa.Table, int]:
    """A parquet table of image bytes (or paths) with junk columns; (table, rows)."""
    n = draw(st.integers(1, 10))
    payloads = [draw(image_payloads()) for _ in range(n)] + [(e, d, True) for e, d in VALID[:MIN_GOOD]]
    m = len(payloads)
    images = [d if draw(st.integers(0, 9)) else None for _, d, _ in payloads[:n]] + [d for _, d, _ in payloads[n:]]
    cols: dict[str, pa.Array] = {"image": pa.array(images, pa.binary())}
    cap_kind = draw(st.sampled_from(["string", "binary", "int", "none", "missing"]))
    caps = [draw(CAPTIONS) for _ in range(m)]
    if cap_kind == "string":
        cols["caption"] = pa.array([c.decode("utf-8", "replace") for c in caps])
    elif cap_kind == "binary":
        cols["caption"] = pa.array(caps, pa.binary())
    elif cap_kind == "int":
        cols["caption"] = pa.array(range(m))
    elif cap_kind == "none":
        cols["caption"] = pa.nulls(m, pa.string())
    if draw(st.booleans()):  # keys, often duplicated
        cols["key"] = pa.array([str(draw(st.integers(0, 3))) for _ in range(n)] + [f"v{i}" for i in range(m - n)])
    if draw(st.booleans()):
        cols["uid"] = pa.array([draw(st.sampled_from(["", "zz", "0" * 32, "A" * 32, None])) for _ in range(n)]
                               + [None] * (m - n))
    if draw(st.booleans()):
        cols["width"] = pa.array([draw(st.sampled_from(["12", "abc", "", None, "1e9", "-5"])) for _ in range(m)])
        cols["height"] = pa.array([draw(st.sampled_from([1.5, float("nan"), None, 1e30, -3.0])) for _ in range(m)])
    if draw(st.booleans()):
        cols["category"] = pa.array([draw(st.sampled_from(["a", "", None, "x/y"])) for _ in range(m)])
    return pa.table(cols), m


@FUZZ
@given(parquet_tables())
def test_parquet_with_junk_bytes_and_columns(table_rows):
    table, m = table_rows
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.parquet"
        pq.write_table(table, src, row_group_size=3)
        ws = build(src, Path(tmp) / "ws")
        samples, rejects = tables(ws)
        assert len(samples) + len(rejects) == m
        if "caption" in table.column_names and pa.types.is_binary(table.schema.field("caption").type):
            raw = table.column("caption").to_pylist()
            keys = table.column("key").to_pylist() if "key" in table.column_names else None
            if keys is None:  # keys "t.parquet:row": check every caption and its flag
                for key, cap, flag in samples[["key", "caption", "caption_flag"]].itertuples(index=False):
                    want, want_flag = expected_caption(raw[int(key.split(":")[1])])
                    assert cap == want and (flag if isinstance(flag, str) else None) == want_flag


@FUZZ
@given(st.lists(st.tuples(PATH_CELLS, st.sampled_from(["string", "null"])), min_size=1, max_size=10), st.booleans())
def test_parquet_of_paths_with_null_and_garbage_paths(rows, binary_captions):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        good, broken = _write_images(tmp / "img", 2)
        paths = []
        for i, (p, kind) in enumerate(rows):
            p = {"good": good[i % len(good)], "broken": broken[i % len(broken)]}.get(p, p)
            paths.append(None if kind == "null" else p)
        paths += good
        src = tmp / "paths.parquet"
        pq.write_table(pa.table({"filepath": pa.array(paths, pa.string()),
                                 "caption": pa.array([f"c{i}\xff".encode("latin-1") for i in range(len(paths))],
                                                     pa.binary())
                                 if binary_captions else pa.array([f"c{i}" for i in range(len(paths))])}), src)
        samples, rejects = tables(build(src, tmp / "ws"))
        assert len(samples) + len(rejects) == len(paths)


def test_tables_without_the_columns_name_the_file(tmp_path):
    from densprune.ingest.sources import SourceError

    csv = tmp_path / "nocol.csv"
    csv.write_bytes(b"a,b\n1,2\n")
    pqf = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), pqf)
    for src in (csv, pqf):
        with pytest.raises(SourceError, match=str(src)):
            build(src, tmp_path / "ws")


# --------------------------------------------------------------------------------------------
# webdataset tar shards
# --------------------------------------------------------------------------------------------

JSONS = st.one_of(st.none(), st.just(b"{not json"), st.just(b"[1, 2]"), st.just(b'"text"'), st.just(b"\xff\xfe"),
                  st.fixed_dictionaries({}, optional={
                      "caption": st.one_of(st.text(max_size=20), st.integers(), st.none(), st.just("\udcff bad")),
                      "original_width": st.one_of(st.integers(-5, 10**6), st.text(max_size=4)),
                      "uid": st.one_of(st.just("0" * 32), st.text(max_size=4))})
                  .map(lambda d: json.dumps(d).encode()))


@st.composite
def tar_shards(draw) -> tuple[list[list[tuple[str, bytes]]], list[list[str]], int | None]:
    """Members of 1-2 shards (tar order), their sample keys, and a byte at which to cut the last shard (or None)."""
    shards, keys = [], []
    for s in range(draw(st.integers(1, 2))):
        members, skeys = [], []
        samples = draw(st.lists(st.tuples(st.one_of(st.none(), image_payloads()), st.one_of(st.none(), CAPTIONS), JSONS,
                                          st.sampled_from(["", "dir/", "a.b/"])), min_size=1, max_size=8))
        samples += [((e, d, True), b"fine", None, "") for e, d in VALID[:MIN_GOOD]] if s == 0 else []
        for j, (img, cap, js, prefix) in enumerate(samples):
            key = f"{prefix}{s}{j:04d}"
            for ext, data in ((img[0] if img else None, img[1] if img else None), ("txt", cap), ("json", js)):
                if ext is not None and data is not None:
                    members.append((f"{key}.{ext}", data))
            if any(name.startswith(key + ".") for name, _ in members):
                skeys.append(key)
        if draw(st.booleans()):  # junk: a member without an extension, one no sample has an image for
            members.insert(draw(st.integers(0, len(members))), ("README", b"junk"))
            members.append((f"zz{s}.xyz", b"junk"))
            skeys.append(f"zz{s}")
        shards.append(members)
        keys.append(skeys)
    cut = draw(st.one_of(st.none(), st.integers(0, 10**6)))
    return shards, keys, cut


@FUZZ
@given(tar_shards())
def test_webdataset_shards_truncated_and_junk(spec):
    shards, keys, cut = spec
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "shards").mkdir()
        ends: dict[str, int] = {}  # sample key -> end of its last member's data (bytes)
        for s, members in enumerate(shards):
            path = tmp / "shards" / f"{s:05d}.tar"
            with tarfile.open(path, "w") as tf:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                    if s == len(shards) - 1:
                        ends[name.split(".")[0] if "/" not in name else name.rsplit(".", 1)[0]] = tf.offset
                last_end = tf.offset
        last = tmp / "shards" / f"{len(shards) - 1:05d}.tar"
        size = last.stat().st_size
        cut = None if cut is None or len(shards) == 1 else cut % size  # shard 0 keeps the valid images
        if cut is not None:
            last.write_bytes(last.read_bytes()[:cut])
        ws = build(tmp / "shards", tmp / "ws")
        samples, rejects = tables(ws)
        shard_rejects = rejects[rejects.key.str.endswith(".tar")]
        row_rejects = rejects[~rejects.key.str.endswith(".tar")]
        want = {f"{s:05d}.tar/{k}" for s, ks in enumerate(keys) for k in ks}
        got = list(samples.key) + list(row_rejects.key)
        assert len(got) == len(set(got)), "a sample both kept and rejected, or listed twice"
        assert set(got) <= want | {f"{len(shards) - 1:05d}.tar/README"} | {f"{s:05d}.tar/README" for s in range(2)}
        if cut is None:
            assert want <= set(got)
            assert shard_rejects.empty
        else:
            complete = {f"{len(shards) - 1:05d}.tar/{k}" for k in keys[-1] if ends.get(k, size) <= cut}
            assert want - {f"{len(shards) - 1:05d}.tar/{k}" for k in keys[-1]} <= set(got)
            assert complete <= set(got)
            if cut < last_end + 512:  # no end-of-archive block left: the shard is reported
                assert len(shard_rejects) == 1 and "unreadable tar shard" in shard_rejects.reason.iloc[0]
            else:
                assert shard_rejects.empty


# --------------------------------------------------------------------------------------------
# released embeddings
# --------------------------------------------------------------------------------------------

@st.composite
def vector_blocks(draw, n: int, d: int) -> tuple[np.ndarray, set[int]]:
    """(n, d) vectors with some rows NaN, inf, zero, tiny or huge; the rows that must be rejected."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n, d))
    bad = set()
    for i in range(n):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "nan", "inf", "zero", "tiny", "huge"]))
        if kind == "nan":
            x[i, draw(st.integers(0, d - 1))] = np.nan
        elif kind == "inf":
            x[i, draw(st.integers(0, d - 1))] = -np.inf
        elif kind == "zero":
            x[i] = 0
        elif kind == "tiny":
            x[i] *= 1e-12
        elif kind == "huge":
            x[i] *= 1e30
        if kind in ("nan", "inf", "zero", "tiny"):
            bad.add(i)
    return x, bad


@st.composite
def released_sources(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    sizes[0] += 6  # enough good rows for K = 2
    d = draw(st.sampled_from([4, 8]))
    dtypes = [draw(st.sampled_from(["float16", "float32", "float64"])) for _ in sizes]
    blocks = []
    for k, n in enumerate(sizes):
        x, bad = draw(vector_blocks(n, d))
        if k == 0:
            x[-6:] = np.random.default_rng(k).normal(size=(6, d))
            bad -= set(range(n - 6, n))
        if dtypes[k] == "float16":  # what float16 cannot hold is inf there: rejected too
            with np.errstate(over="ignore"):
                bad |= {i for i in range(n) if not np.isfinite(x[i].astype(np.float16)).all()
                        or np.linalg.norm(x[i].astype(np.float16).astype(np.float64)) < 1e-6}
        blocks.append((x, bad))
    fault = draw(st.sampled_from(["none"] * 4 + ["dim", "rows", "int", "1d"]))
    fault_shard = draw(st.integers(0, len(sizes) - 1))
    if fault == "dim" and len(sizes) == 1:  # one shard of another width is just another model
        fault = "none"
    captions = [[draw(CAPTIONS) for _ in range(n)] for n in sizes]
    return sizes, d, dtypes, blocks, fault, fault_shard, captions


def _faulty(x: np.ndarray, dtype: str, fault: str, d: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        if fault == "dim":
            return np.random.default_rng(0).normal(size=(x.shape[0], d + 1)).astype(dtype)
        if fault == "rows":
            return np.concatenate([x, x[:1]]).astype(dtype)
        if fault == "int":
            return np.nan_to_num(x).astype(np.int32)
        if fault == "1d":
            return x[:, 0].astype(dtype)
        return x.astype(dtype)


@FUZZ
@given(released_sources())
def test_clip_retrieval_with_bad_rows_and_bad_files(src):
    sizes, d, dtypes, blocks, fault, fault_shard, captions = src
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        for sub in ("img_emb", "metadata"):
            (root / sub).mkdir(parents=True)
        keys, bad_keys, caps = [], set(), {}
        for k, ((x, bad), dtype) in enumerate(zip(blocks, dtypes)):
            arr = _faulty(x, dtype, fault if k == fault_shard else "none", d)
            np.save(root / "img_emb" / f"img_emb_{k}.npy", arr)
            ks = [f"k{k}-{i}" for i in range(sizes[k])]
            pq.write_table(pa.table({"key": ks, "caption": pa.array(captions[k], pa.binary()),
                                     "url": [f"http://x/{i}" for i in range(sizes[k])]}),
                           root / "metadata" / f"metadata_{k}.parquet", row_group_size=5)
            keys += ks
            bad_keys |= {ks[i] for i in bad}
            caps.update(zip(ks, captions[k]))
        if fault != "none":
            with pytest.raises(ReleasedError) as err:
                build(root, Path(tmp) / "ws")
            named = fault_shard if fault != "dim" else max(fault_shard, 1)  # the first shard sets the width
            assert f"img_emb_{named}.npy" in str(err.value)
            return
        ws = build(root, Path(tmp) / "ws")
        samples, rejects = tables(ws)
        assert_partition(samples, rejects, keys)
        assert set(rejects.key) == bad_keys
        norms = np.linalg.norm(np.load(ws / "embeddings" / "image.npy").astype(np.float64), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=2e-3)
        for key, cap, flag in samples[["key", "caption", "caption_flag"]].itertuples(index=False):
            want, want_flag = expected_caption(caps[key])
            assert cap == want and (flag if isinstance(flag, str) else None) == want_flag


@FUZZ
@given(released_sources(),
       st.lists(st.sampled_from(["ok", "ok", "ok", "bad", "dup", "upper"]), min_size=30, max_size=30))
def test_datacomp_with_bad_rows_uids_and_files(src, uid_kinds):
    sizes, d, dtypes, blocks, fault, fault_shard, captions = src
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        root.mkdir()
        keys, bad_keys, g = [], set(), 0
        for k, ((x, bad), dtype) in enumerate(zip(blocks, dtypes)):
            arr = _faulty(x, dtype, fault if k == fault_shard else "none", d)
            uids = []
            for i in range(sizes[k]):
                kind = uid_kinds[g % 30] if not (k == 0 and i >= sizes[0] - 6) else "ok"
                u = f"{g:032x}"
                if kind == "bad":
                    u = f"not-a-uid-{g}"
                    bad_keys.add(u)
                elif kind == "dup" and keys:
                    u = keys[0]
                    bad_keys.add(u)  # rejected as a repeat (key = the uid, shared with its first row)
                elif kind == "upper":
                    u = u.upper()
                if i in bad:
                    bad_keys.add(u)
                uids.append(u)
                g += 1
            keys += uids
            np.savez(root / f"{k:08d}.npz", b32_img=arr)
            pq.write_table(pa.table({"uid": uids, "text": pa.array(captions[k], pa.binary())}),
                           root / f"{k:08d}.parquet")
        if fault != "none":
            with pytest.raises(ReleasedError) as err:
                build(root, Path(tmp) / "ws")
            named = fault_shard if fault != "dim" else max(fault_shard, 1)
            assert f"{named:08d}.npz" in str(err.value)
            return
        samples, rejects = tables(build(root, Path(tmp) / "ws"))
        assert len(samples) + len(rejects) == len(keys)
        assert sorted(list(samples.key) + list(rejects.key)) == sorted(keys)
        assert set(samples.key).isdisjoint(bad_keys - {keys[0]})


# --------------------------------------------------------------------------------------------
# non-UTF-8 captions: flagged, counted in `densprune info`
# --------------------------------------------------------------------------------------------

def test_invalid_utf8_captions_are_replaced_flagged_and_counted(tmp_path, capsys):
    from densprune.cli.main import main

    root = tmp_path / "imgs"
    root.mkdir()
    for i, (ext, data) in enumerate(VALID[:6]):
        (root / f"s{i}.{ext}").write_bytes(data)
        (root / f"s{i}.txt").write_bytes(b"caf\xe9 latin-1" if i < 2 else "café utf-8".encode())
    (root / b"\xff\xfe name.jpg".decode("utf-8", "surrogateescape")).write_bytes(VALID[4][1])  # not a UTF-8 name
    ws = build(root, tmp_path / "ws")
    s = db.query_df(ws, "SELECT key, caption, caption_flag, image_loc FROM samples ORDER BY key")
    assert list(s.caption[:2]) == ["caf\ufffd latin-1"] * 2 and list(s.caption_flag[:2]) == [INVALID_UTF8] * 2
    assert list(s.caption[2:6]) == ["café utf-8"] * 4 and s.caption_flag[2:].isna().all()
    assert s.key[6] == "\ufffd\ufffd name.jpg" and json.loads(s.image_loc[6])[1].endswith("\udcff\udcfe name.jpg")
    assert main(["info", str(ws)]) == 0
    out = capsys.readouterr().out
    assert f"2  caption {INVALID_UTF8}" in out
    from test_app_pages import no_errors, open_app  # the Overview page shows the same count

    at = open_app(ws)
    no_errors(at)
    assert "Flagged captions" in [h.value for h in at.subheader]
    shown = next(df.value for df in at.dataframe if "flag" in df.value.columns)
    assert shown.to_dict("records") == [{"flag": INVALID_UTF8, "count": 2}]


def test_a_source_with_too_few_usable_rows_is_a_clear_error(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    (root / "b.png").write_bytes(b"junk")
    why = rf"{root}: none of the 2 samples could be decoded; first reasons: a.jpg: empty image file"
    with pytest.raises(ValueError, match=why):
        build(root, tmp_path / "ws")
    (root / "c.jpg").write_bytes(VALID[0][1])
    with pytest.raises(ValueError, match=rf"{root}: only 1 usable pool rows for --clusters 2"):
        build(root, tmp_path / "ws2")


@pytest.mark.parametrize("where", ["in a header", "in a member's data"])
def test_a_truncated_tar_keeps_what_was_read_and_says_so(tmp_path, where):
    from densprune.ingest.sources import list_source

    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tf:
        for j in range(5):
            for name, data in ((f"{j:05d}.jpg", VALID[0][1]), (f"{j:05d}.txt", b"cap")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            if j == 2:
                end_of_third = tf.offset
    cut = end_of_third + 100 if where == "in a header" else end_of_third - 10
    path.write_bytes(path.read_bytes()[:cut])
    listing = list_source(str(path))
    assert [r.key for r in listing.refs] == ["00000.tar/00000", "00000.tar/00001", "00000.tar/00002"]
    assert [r.key for r in listing.rejects] == ["00000.tar"]
    assert "unreadable tar shard" in listing.rejects[0].reason and str(path) in listing.rejects[0].reason
