"""Hostile input through every source kind: FIFOs, device links (/dev/zero), symbolic links out of the
source folder, tar names that would extract outside their folder, repeated names, oversized files, images
over PIL's own pixel limit, a damaged workspace database.

Each case ends as a reject with its reason or as a clear error naming the file: never a hang (every
command runs under a subprocess timeout; a FIFO read in this process is unblocked by a watchdog, so that
the code before the fixes fails instead of hanging), never a traceback, never a silently lost row (rows
in = samples + rejects, matched by key). End-to-end cases run the installed ``densprune`` console command;
unit cases call the library. Oversized files are sparse (no disk space, no bytes read).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COLORS, SHAPES, encode, make_image
from PIL import Image

from densprune import db
from densprune.ingest.media import MAX_FILE_BYTES, file_problem, unsafe_member_name
from densprune.ingest.reject_kinds import reason_kind
from densprune.ingest.sources import SourceError, list_source, read_bytes

DENSPRUNE = Path(sys.executable).parent / "densprune"
TIMEOUT = 120  # s per command: a hang fails the test instead of the run
FAST = ("--embedder", "offline", "-k", "2", "--niter", "5", "--layout-rows", "64", "--eval-per-category", "0",
        "--batch-size", "16", "--shard-size", "32")


def cli(*args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``densprune ARGS`` (the installed console command), never a traceback."""
    proc = subprocess.run([str(DENSPRUNE), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


def jpeg(seed: int, size: int = 32) -> bytes:
    color = list(COLORS.values())[seed % 4]
    return encode(make_image(color, SHAPES[seed % 2], size=size, seed=seed), "JPEG")


@pytest.fixture(scope="module")
def jpeg_10k() -> bytes:
    """A 10,000 x 10,000 grey JPEG (100M pixels: over PIL's own 89.5M limit, at densprune's default cap)."""
    return encode(Image.fromarray(np.full((10_000, 10_000), 128, np.uint8)), "JPEG")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (its data is a few bytes: only the header is read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def sparse(path: Path, size: int = MAX_FILE_BYTES + 1) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


@contextlib.contextmanager
def unblocked(*fifos: Path, after: float = 2.0):
    """Open the write end of each FIFO now and then, after ``after`` seconds: a reader blocked on one (the
    code before the fixes) then reads end-of-file instead of hanging the test run."""
    stop = threading.Event()

    def run() -> None:
        if stop.wait(after):
            return
        while not stop.is_set():
            for f in fifos:
                with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            stop.wait(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def tables(ws: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    samples = db.query_df(ws, "SELECT key, caption, image_ref FROM samples ORDER BY row_idx")
    rejects = db.load_rejects(ws)
    assert (rejects.reason.str.len() > 0).all(), "a reject without a reason"
    return samples, rejects


def assert_partition(samples: pd.DataFrame, rejects: pd.DataFrame, want_samples: set[str],
                     want_rejects: dict[str, str]) -> None:
    """rows in = samples + rejects: exactly these sample keys, and these reject keys with these reason kinds."""
    assert len(samples) + len(rejects) == len(want_samples) + len(want_rejects)
    assert set(samples.key) == want_samples
    got = {k: reason_kind(r) for k, r in zip(rejects.key, rejects.reason)}
    assert got == want_rejects, rejects[["key", "reason"]].to_string()
    assert not set(samples.key) & set(rejects.key)


# --------------------------------------------------------------------------------------------
# image folders: regular files only, bounded, inside the folder (unless --follow-links)
# --------------------------------------------------------------------------------------------

def hostile_folder(tmp: Path, big: bytes | None = None) -> Path:
    root, outside = tmp / "images", tmp / "outside"
    root.mkdir()
    outside.mkdir()
    for i in range(6):
        (root / f"ok{i}.jpg").write_bytes(jpeg(i))
        (root / f"ok{i}.txt").write_text(f"caption {i}")
    (outside / "real.jpg").write_bytes(jpeg(11))
    (outside / "secret.txt").write_text("a file out of the source folder")
    os.mkfifo(root / "fifo.jpg")
    os.symlink("/dev/zero", root / "zero.jpg")
    os.symlink("/dev/null", root / "null.png")
    os.symlink(outside / "real.jpg", root / "out.jpg")
    os.symlink("ok0.jpg", root / "inside.jpg")  # a link inside the folder: a sample
    os.symlink(tmp / "missing.jpg", root / "broken.jpg")
    os.symlink(outside, root / "linked")  # a folder out of the source folder
    sparse(root / "huge.jpg")
    (root / "capfifo.jpg").write_bytes(jpeg(7))
    os.mkfifo(root / "capfifo.txt")  # its caption sidecar is a FIFO
    (root / "capout.jpg").write_bytes(jpeg(8))
    os.symlink(outside / "secret.txt", root / "capout.txt")  # its caption is a link out of the folder
    if big is not None:
        (root / "big10k.jpg").write_bytes(big)
    return root


FOLDER_REJECTS = {"fifo.jpg": "not a regular file (FIFO)", "zero.jpg": "not a regular file (character device)",
                  "null.png": "not a regular file (character device)", "huge.jpg": "file too large",
                  "broken.jpg": "broken symbolic link", "capfifo.jpg": "unreadable caption file"}
FOLDER_SAMPLES = {f"ok{i}.jpg" for i in range(6)} | {"inside.jpg"}


def test_file_problem_names_fifos_devices_links_and_sizes(tmp_path):
    root = hostile_folder(tmp_path)
    real = os.path.realpath(root)
    assert file_problem(root / "ok0.jpg", root=real) is None
    assert file_problem(root / "inside.jpg", root=real) is None
    assert file_problem(root / "fifo.jpg") == "not a regular file (FIFO)"
    assert file_problem(root / "zero.jpg").startswith("not a regular file (character device via a symbolic link")
    assert file_problem(tmp_path / "outside") == "not a regular file (folder)"
    assert file_problem(root / "broken.jpg").startswith("broken symbolic link")
    assert file_problem(tmp_path / "nothing.jpg") == "file not found"
    assert file_problem(root / "huge.jpg").startswith(f"file too large ({MAX_FILE_BYTES + 1:,} bytes")
    assert file_problem(root / "huge.jpg", max_bytes=None) is None
    assert file_problem(root / "out.jpg", root=real).startswith("symbolic link out of the source folder")
    assert file_problem(root / "out.jpg", root=real, follow_links=True) is None
    assert file_problem(root / "out.jpg") is None  # no source folder (a table's paths): links are followed
    assert file_problem("a\0b.jpg").startswith("invalid path")


def test_a_folder_lists_hostile_files_as_rejects_with_their_reasons(tmp_path):
    root = hostile_folder(tmp_path)
    with unblocked(root / "fifo.jpg", root / "capfifo.txt"):
        listing = list_source(str(root))
    want = dict(FOLDER_REJECTS, **{"out.jpg": "link out of the source folder", "capout.jpg": "unreadable caption file",
                                   "linked": "link to a folder out of the source folder"})
    assert {r.key for r in listing.refs} == FOLDER_SAMPLES
    assert {r.key: reason_kind(r.reason) for r in listing.rejects} == want
    for r in listing.rejects:
        assert r.reason.startswith(str(root / r.key)), r.reason  # the reason names the file
    assert not any("a file out of the source folder" in r.caption for r in listing.refs)  # the secret was not read
    followed = list_source(str(root), follow_links=True)
    assert {r.key for r in followed.refs} == FOLDER_SAMPLES | {"out.jpg", "capout.jpg", "linked/real.jpg"}
    assert {r.key: reason_kind(r.reason) for r in followed.rejects} == FOLDER_REJECTS


def test_a_folder_link_cycle_is_walked_once_with_follow_links(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(jpeg(0))
    os.symlink(root, root / "a" / "loop")  # back to the top: inside, not walked again
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "y.jpg").write_bytes(jpeg(1))
    os.symlink(root, outside / "back")  # out and back in
    os.symlink(outside, root / "out")
    listing = list_source(str(root), follow_links=True)
    assert [r.key for r in listing.refs] == ["a/x.jpg", "out/y.jpg"] and not listing.rejects


def test_read_bytes_refuses_a_fifo_or_device_put_in_place_after_listing(tmp_path):
    good = tmp_path / "a.jpg"
    good.write_bytes(jpeg(0))
    listing = list_source(str(tmp_path))
    good.unlink()
    os.mkfifo(good)
    with unblocked(good), pytest.raises(OSError, match="not a regular file \\(FIFO\\)"):
        read_bytes(listing.refs[0].loc)
    with pytest.raises(OSError, match="not a regular file \\(character device\\)"):
        read_bytes(("file", "/dev/null"))
    with pytest.raises(OSError, match="file too large"):
        read_bytes(("file", str(sparse(tmp_path / "big.jpg"))))


@pytest.mark.parametrize("follow", [False, True], ids=["links-rejected", "follow-links"])
def test_cli_folder_of_hostile_files(tmp_path, jpeg_10k, follow):
    """FIFOs, /dev/zero and /dev/null links, links out of the folder, a broken link, a sparse 1 GiB file, hostile
    caption sidecars, and a 10,000 x 10,000 image (over PIL's own limit, at the default --max-pixels), decoded in
    a DataLoader worker (--workers 1)."""
    root = hostile_folder(tmp_path, jpeg_10k)
    ws = tmp_path / "ws"
    proc = cli("precompute", root, "--workspace", ws, *FAST, "--workers", "1", *(["--follow-links"] if follow else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, rejects = tables(ws)
    if follow:
        assert_partition(samples, rejects, FOLDER_SAMPLES | {"big10k.jpg", "out.jpg", "capout.jpg", "linked/real.jpg"},
                         FOLDER_REJECTS)
        assert samples.set_index("key").caption["capout.jpg"] == "a file out of the source folder"
    else:
        assert_partition(samples, rejects, FOLDER_SAMPLES | {"big10k.jpg"},
                         dict(FOLDER_REJECTS, **{"out.jpg": "link out of the source folder",
                                                 "capout.jpg": "unreadable caption file",
                                                 "linked": "link to a folder out of the source folder"}))
    size = db.query_df(ws, "SELECT width, height FROM samples WHERE key = 'big10k.jpg'")
    assert size.values.tolist() == [[10_000, 10_000]]


# --------------------------------------------------------------------------------------------
# tables of paths (CSV, parquet): the same check of every path; the table file itself
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_cli_table_of_hostile_paths(tmp_path, kind):
    files, outside = tmp_path / "files", tmp_path / "elsewhere"
    files.mkdir()
    outside.mkdir()
    good = []
    for i in range(6):
        (files / f"ok{i}.jpg").write_bytes(jpeg(i))
        good.append(f"files/ok{i}.jpg")
    (outside / "real.jpg").write_bytes(jpeg(9))
    os.mkfifo(files / "fifo.jpg")
    os.symlink("/dev/zero", files / "zero.jpg")
    os.symlink(outside / "real.jpg", files / "link.jpg")  # a table names paths anywhere: links are followed
    sparse(files / "huge.jpg")
    (files / "dir.jpg").mkdir()
    bad = {"files/fifo.jpg": "not a regular file (FIFO)", "/dev/zero": "not a regular file (character device)",
           "files/zero.jpg": "not a regular file (character device)", "files/huge.jpg": "file too large",
           "files/dir.jpg": "not a regular file (folder)", "files/missing.jpg": "file not found"}
    paths = good + ["files/link.jpg"] + list(bad) + [good[0]]  # the last row repeats the first
    table = pd.DataFrame({"filepath": paths, "caption": [f"row {i}" for i in range(len(paths))]})
    src = tmp_path / f"table.{kind}"
    table.to_csv(src, index=False) if kind == "csv" else pq.write_table(pa.Table.from_pandas(table), src)
    ws = tmp_path / "ws"
    proc = cli("precompute", src, "--workspace", ws, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, rejects = tables(ws)
    assert len(samples) + len(rejects) == len(paths)
    assert sorted(samples.key) == sorted(good + ["files/link.jpg"])
    row = (lambda i: f"{src.name}:{i + 2}") if kind == "csv" else (lambda i: f"{src.name}:{i}")
    want = {row(paths.index(p)): kind_ for p, kind_ in bad.items()}
    got = {k: reason_kind(r) for k, r in zip(rejects.key, rejects.reason) if k.startswith(src.name)}
    assert got == want
    dup = rejects[~rejects.key.str.startswith(src.name)]
    assert dup.key.tolist() == [good[0]] and reason_kind(dup.reason.iloc[0]) == "duplicate uid"


def test_a_table_shard_or_parquet_file_that_is_a_fifo_or_device_is_an_error_naming_it(tmp_path):
    csv_fifo = tmp_path / "table.csv"
    os.mkfifo(csv_fifo)
    with unblocked(csv_fifo), pytest.raises(SourceError, match=f"{csv_fifo}: not a regular file \\(FIFO\\)"):
        list_source(str(csv_fifo))
    os.symlink("/dev/zero", tmp_path / "zero.tsv")
    with pytest.raises(SourceError, match="zero.tsv: not a regular file \\(character device"):
        list_source(str(tmp_path / "zero.tsv"))
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"image": [jpeg(0)], "caption": ["a"]}), folder / "a.parquet")
    os.mkfifo(folder / "b.parquet")
    with unblocked(folder / "b.parquet"), pytest.raises(SourceError, match="b.parquet: not a regular file \\(FIFO\\)"):
        list_source(str(folder))


# --------------------------------------------------------------------------------------------
# webdataset shards: repeated names, unsafe names, links and special members, oversized members
# --------------------------------------------------------------------------------------------

def write_tar(path: Path, members: list[tuple]) -> None:
    """A tar written header by header: (name, bytes) for a file, (name, type, linkname) for a link or
    special member, (name, None, size) for a file of ``size`` bytes left as a hole (sparse: never written)."""
    with open(path, "wb") as fh:
        for m in members:
            info = tarfile.TarInfo(m[0])
            data = m[1] if len(m) == 2 else b""
            if len(m) == 2:
                info.size = len(data)
            elif m[1] is None:
                info.size = m[2]
            else:
                info.type, info.linkname = m[1], m[2]
            fh.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
            if m[1] is None:
                fh.seek(info.size + (-info.size % 512), os.SEEK_CUR)
            else:
                fh.write(data + b"\0" * (-len(data) % 512))
        fh.write(b"\0" * 1024)


def test_a_repeated_tar_member_name_is_a_reject_not_a_lost_sample(tmp_path):
    """The issue's case: 20 samples in, one name used twice: 19 samples + 1 reject (was 19 + 0)."""
    members = []
    for j in range(20):
        name = f"{min(j, 18):04d}"  # samples 18 and 19 share the name 0018
        members += [(f"{name}.jpg", jpeg(j)), (f"{name}.txt", f"caption {j}".encode())]
    write_tar(tmp_path / "00000.tar", members)
    listing = list_source(str(tmp_path / "00000.tar"))
    assert len(listing.refs) == 19 and [r.key for r in listing.rejects] == ["00000.tar/0018#2"]
    assert reason_kind(listing.rejects[0].reason) == "duplicate sample name in its tar shard"
    first = next(r for r in listing.refs if r.key == "00000.tar/0018")
    assert first.caption == "caption 18" and read_bytes(first.loc) == jpeg(18)  # the first one is kept, whole


HOSTILE_MEMBERS = [("../../../evil.jpg", b"x"), ("../../../evil.txt", b"escape"), ("/abs/x.jpg", b"x"),
                   ("ok/../../y.jpg", b"x"), ("lnk.jpg", tarfile.SYMTYPE, "/etc/passwd"),
                   ("hard.jpg", tarfile.LNKTYPE, "0001.jpg"), ("pipe.jpg", tarfile.FIFOTYPE, ""),
                   ("dev.jpg", tarfile.CHRTYPE, ""), ("huge.jpg", None, MAX_FILE_BYTES + 1),
                   ("hugecap.jpg", b"x"), ("hugecap.txt", None, 64 << 20)]
TAR_REJECTS = {"00000.tar/0002#2": "duplicate sample name in its tar shard",
               "00000.tar/../../../evil": "unsafe tar member name", "00000.tar//abs/x": "unsafe tar member name",
               "00000.tar/ok/../../y": "unsafe tar member name",
               **{f"00000.tar/{n}.jpg": "tar link or special file" for n in ("lnk", "hard", "pipe", "dev")},
               "00000.tar/huge": "file too large", "00000.tar/hugecap": "file too large",
               "00001.tar": "unreadable tar shard", "00002.tar": "unreadable tar shard"}


def hostile_shards(tmp: Path) -> Path:
    shards = tmp / "shards"
    shards.mkdir()
    members = []
    for j in range(6):
        members += [(f"{j:04d}.jpg", jpeg(j)), (f"{j:04d}.txt", f"caption {j}".encode()),
                    (f"{j:04d}.json", json.dumps({"caption": "json"}).encode())]
    members += [("0002.jpg", jpeg(20)), ("0002.txt", b"the repeat")]  # the name 0002 again
    members += HOSTILE_MEMBERS + [("0006.jpg", jpeg(6))]  # a sample after the sparse members
    write_tar(shards / "00000.tar", members)
    os.mkfifo(shards / "00001.tar")
    os.symlink("/dev/zero", shards / "00002.tar")
    return shards


def test_unsafe_tar_names_links_special_and_oversized_members_are_rejected(tmp_path):
    shards = hostile_shards(tmp_path)
    with unblocked(shards / "00001.tar"):
        listing = list_source(str(shards))
    assert {r.key for r in listing.refs} == {f"00000.tar/{j:04d}" for j in range(7)}
    assert {r.key: reason_kind(r.reason) for r in listing.rejects} == TAR_REJECTS
    assert unsafe_member_name("a/b.jpg") is None and unsafe_member_name("./a..b.jpg") is None
    assert unsafe_member_name("..\\x.jpg") and unsafe_member_name("C:/x.jpg") and unsafe_member_name("/x.jpg")


def test_cli_webdataset_shards_with_hostile_members_and_a_safe_export(tmp_path):
    shards = hostile_shards(tmp_path)
    ws = tmp_path / "ws"
    proc = cli("precompute", shards, "--workspace", ws, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, rejects = tables(ws)
    assert_partition(samples, rejects, {f"00000.tar/{j:04d}" for j in range(7)}, TAR_REJECTS)
    assert cli("plan", ws, "--name", "all", "--keep", "1.0").returncode == 0
    out = tmp_path / "export"
    proc = cli("export", ws, "--plan", "all", "--format", "webdataset", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names, data = [], {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tf:
            for info in tf:
                names.append(info.name)
                data[info.name] = tf.extractfile(info).read()
    assert names and not [n for n in names if unsafe_member_name(n)]
    assert data["0002.jpg"] == jpeg(2) and data["0002.txt"] == b"caption 2"  # the first of the repeated name


def test_the_webdataset_writer_never_writes_an_unsafe_member_name(tmp_path):
    """Defence in depth: a workspace listed before unsafe names were rejected still exports safe names."""
    from densprune.export.writers import write_webdataset

    tar = tmp_path / "src.tar"
    write_tar(tar, [("../../../evil.jpg", jpeg(0)), ("../../../evil.txt", b"escape"), ("/abs/x.jpg", jpeg(1)),
                    ("fine.jpg", jpeg(2))])
    with tarfile.open(tar) as tf:
        offsets = {i.name: (i.offset_data, i.size) for i in tf}
    rows = []
    kept = [("../../../evil.jpg", "a" * 32), ("/abs/x.jpg", "b" * 32), ("fine.jpg", "c" * 32)]
    for i, (name, uid) in enumerate(kept):
        rows.append({"uid": uid, "image_ref": f"{tar.resolve()}#{name}", "row_idx": i, "cluster": 0, "caption": "",
                     "image_loc": json.dumps(["tar", str(tar.resolve()), *offsets[name]])})
    out = tmp_path / "out"
    write_webdataset(pd.DataFrame(rows), out)
    with tarfile.open(next(out.glob("*.tar"))) as tf:
        names = tf.getnames()
    assert not [n for n in names if unsafe_member_name(n)], names
    assert sorted(names) == sorted([f"{'a' * 32}.jpg", f"{'a' * 32}.txt", f"{'b' * 32}.jpg", "fine.jpg"])


# --------------------------------------------------------------------------------------------
# --max-pixels is the one pixel limit (PIL's own 89.5M limit gives way to it)
# --------------------------------------------------------------------------------------------

def test_max_pixels_is_the_one_limit_not_pils(jpeg_10k):
    from densprune.ingest.images import ImageDecodeError, decode_image, probe_image

    pil_default = int(1024 * 1024 * 1024 // 4 // 3)  # PIL's shipped limit (Image.MAX_IMAGE_PIXELS, 89.5M), below
    assert pil_default < 100_000_000  # densprune's default: decoding sets PIL's limit from --max-pixels instead
    before = Image.MAX_IMAGE_PIXELS  # whatever this process has (other tests' decodes may have run)
    assert probe_image(png_header(10_000, 10_000))[2:] == (10_000, 10_000)  # 100M = the default cap
    assert probe_image(png_header(12_000, 12_000), max_pixels=200_000_000)[2:] == (12_000, 12_000)
    for w, h, cap in ((12_000, 12_000, 100_000_000), (30_000, 30_000, 100_000_000), (300, 300, 50_000)):
        for fn in (probe_image, decode_image):
            with pytest.raises(ImageDecodeError, match="pixels exceeds --max-pixels") as exc:
                fn(png_header(w, h), max_pixels=cap)
            assert reason_kind(str(exc.value)) == "too many pixels (--max-pixels)"
    img = decode_image(jpeg_10k)
    assert img.info["original_size"] == (10_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS == before  # densprune's cap applies to its decodes, not to the process


def test_decoding_workers_use_max_pixels_as_pils_limit(tmp_path, jpeg_10k):
    """BatchDataset in this process and in a DataLoader worker (forked while PIL's limit was its default)."""
    from torch.utils.data import DataLoader

    from densprune.embed.batches import BatchDataset, no_collate
    from densprune.embed.models import make_embedder

    (tmp_path / "big.jpg").write_bytes(jpeg_10k)
    (tmp_path / "small.jpg").write_bytes(jpeg(0))
    refs = list_source(str(tmp_path)).refs
    prep = make_embedder("offline", device="cpu").worker_prep()
    ds = BatchDataset(refs, prep, max_pixels=100_000_000, thumb_size=64, thumbnails=False, device_decode=False)
    assert ds[[0, 1]].reasons == ["", ""]
    Image.MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # PIL's default, inherited by the worker
    loader = DataLoader(ds, sampler=[[0, 1]], batch_size=None, collate_fn=no_collate, num_workers=1)
    batch = next(iter(loader))
    assert batch.reasons == ["", ""] and batch.sizes.tolist()[0] == [10_000, 10_000]
    tight = BatchDataset(refs, prep, max_pixels=50_000_000, thumb_size=64, thumbnails=False, device_decode=False)
    assert "exceeds --max-pixels 50,000,000" in tight[[0]].reasons[0]


# --------------------------------------------------------------------------------------------
# released embeddings: a FIFO or a device where a shard file should be
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,file,how", [("clip-retrieval", "img_emb/img_emb_1.npy", "fifo"),
                                             ("clip-retrieval", "metadata/metadata_0.parquet", "fifo"),
                                             ("datacomp", "00000001.npz", "dev-zero"),
                                             ("datacomp", "00000000.parquet", "fifo")])
def test_cli_released_layout_with_a_fifo_or_device_file(tmp_path, layout, file, how):
    from test_released import write_clip_retrieval, write_datacomp

    src = tmp_path / "src"
    (write_clip_retrieval if layout == "clip-retrieval" else write_datacomp)(src, [12, 12])
    (src / file).unlink()
    os.mkfifo(src / file) if how == "fifo" else os.symlink("/dev/zero", src / file)
    proc = cli("precompute", src, "--workspace", tmp_path / "ws", "-k", "2", timeout=60)
    assert proc.returncode == 2
    kind = "FIFO" if how == "fifo" else "character device"
    assert f"error: {src / file}: not a regular file ({kind}" in proc.stderr, proc.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# a damaged DuckDB file where a workspace is expected
# --------------------------------------------------------------------------------------------

def damage(ws: Path, how: str) -> Path:
    ws.mkdir(parents=True)
    path = ws / db.DB_NAME
    if how == "garbage":
        path.write_bytes(os.urandom(5000))
    elif how == "empty":
        path.write_bytes(b"")
    elif how in ("cut-short", "no-tables"):
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE x AS SELECT range AS a, 'v' || range AS b FROM range(200000)")
        if how == "cut-short":
            con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
        con.close()
        if how == "cut-short":
            with open(path, "r+b") as fh:
                fh.truncate(path.stat().st_size // 3)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("how", ["garbage", "empty", "cut-short", "no-tables", "fifo", "folder"])
def test_cli_damaged_workspace_database_is_an_error_naming_it(tmp_path, how):
    path = damage(tmp_path / "ws", how)
    proc = cli("info", tmp_path / "ws", timeout=60)
    assert proc.returncode == 2
    assert f"{path} is not a readable densprune workspace database" in proc.stderr, proc.stderr[-2000:]


def test_cli_every_command_on_a_damaged_database(tmp_path):
    ws = tmp_path / "ws"
    path = damage(ws, "garbage")
    found = cli("verify", ws, timeout=60)  # verify reports it as a finding ("FILE: problem"), exit 1
    assert found.returncode == 1 and f"{path}: cannot be read" in found.stdout, (found.stdout, found.stderr)
    assert "not a readable densprune workspace database" in found.stdout and "Traceback" not in found.stderr
    for args in (("plans", ws), ("plan", ws, "--name", "p", "--keep", "0.5"),
                 ("export", ws, "--plan", "p", "--format", "keys")):
        proc = cli(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "not a readable densprune workspace database" in proc.stderr, (args, proc.stderr)
        assert path.name in proc.stderr
    src = tmp_path / "images"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.jpg").write_bytes(jpeg(i))
    proc = cli("precompute", src, "--workspace", ws, *FAST)
    assert proc.returncode == 2 and "use --force" in proc.stderr  # refused, nothing touched
    assert cli("precompute", src, "--workspace", ws, *FAST, "--force").returncode == 0  # rebuilt
    assert len(db.query_df(ws, "SELECT key FROM samples")) == 6


def test_reject_kinds_of_the_hostile_reasons():
    assert reason_kind("00000001.parquet row 3: duplicate uid 0123 (an earlier row has it)") == "duplicate uid"
    assert reason_kind("/x/a.jpg: not a regular file (block device)") == "not a regular file (block device)"
    assert reason_kind("cannot read: /x/a.jpg: not a regular file (FIFO)") == "not a regular file (FIFO)"
    assert reason_kind("/t/0.tar: unreadable tar shard (not a regular file (FIFO))") == "unreadable tar shard"
    assert reason_kind("/data/t.csv row 4: not a file: /x") == "not a file"  # workspaces built before
