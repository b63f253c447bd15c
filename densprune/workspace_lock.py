"""One writer per workspace: the lock that ``precompute`` and ``recluster`` hold while they rewrite it.

``DIR/.densprune.writer.lock`` is locked with ``fcntl.flock``:

- exclusively by ``densprune precompute`` (from images or from released embeddings) and
  ``densprune recluster``: they replace the database, the ``.npy`` files and ``thumbs.bin``;
- shared by plan saves and exports: any number of them at once, none while a precompute or a
  recluster holds it exclusively.

Nobody waits: a lock that is taken raises :class:`WorkspaceInUse` at once, naming the holder from
the records in ``DIR/.densprune.writer.lock.d/`` (one small JSON file per holder: pid, what it is,
when it started). The kernel releases a ``flock`` when its process dies, however it dies, so a lock
left by a SIGKILLed process is free again: the next writer takes it and removes the dead holder's
record (logging that it did). A forked child (a DataLoader worker) closes its inherited copy of the
descriptor, so it cannot keep the lock after its parent died.

This lock is not the one ``densprune.db.connect`` holds for the length of one DuckDB transaction
(``DIR/.densprune.lock``); that one is waited for, this one is not. ``flock`` is local to one
machine: a workspace on network storage written from two machines is not protected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from densprune.db import WorkspaceBusy

log = logging.getLogger(__name__)

LOCK_NAME = ".densprune.writer.lock"
HOLDERS_NAME = ".densprune.writer.lock.d"
ORPHAN_WAIT_S = 10.0  # a taken lock whose recorded holders are all dead: wait this long for it to be released

_held: set[int] = set()  # descriptors of the locks this process holds (closed in forked children)
_held_guard = threading.Lock()


class WorkspaceInUse(WorkspaceBusy):
    """Another process rewrites the workspace (or reads it to save/export while this one would rewrite it)."""


def _close_in_child() -> None:
    """After fork: drop the child's copies of the lock descriptors (closing them does not release the
    parent's lock; flock is released when every copy is closed, or by LOCK_UN, which the child never does)."""
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def lock_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / LOCK_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    except OSError:
        return False
    return True


def holders(workspace: str | os.PathLike) -> list[dict]:
    """The recorded holders of the workspace's lock, oldest first, each with ``alive`` (its pid still runs)."""
    out = []
    folder = Path(workspace) / HOLDERS_NAME
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(f.read_text())
            rec["pid"] = int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: not a holder we can name
        rec["file"] = str(f)
        rec["alive"] = rec.get("host") not in (None, socket.gethostname()) or _pid_alive(rec["pid"])
        out.append(rec)
    return sorted(out, key=lambda r: str(r.get("started", "")))


def _describe(rec: dict) -> str:
    return f"PID {rec['pid']} ({rec.get('what', 'densprune')}, started at {rec.get('started', '?')})"


def in_use_message(workspace: str | os.PathLike, recs: list[dict]) -> str:
    live = [r for r in recs if r["alive"]]
    if not live:
        who = "another process"
    else:
        who = _describe(live[0]) + (f" and {len(live) - 1} other process(es)" if len(live) > 1 else "")
    return f"{workspace} is in use by {who}; try again when it is done"


class _Unlockable(Exception):
    """A workspace this process cannot write: no lock file, and none can be made."""


def _open(path: Path, writable: bool) -> int:
    """A descriptor of the lock file (created when missing). A reader (``writable`` False) of a workspace
    it cannot write opens the file read-only (flock works on it), or gets _Unlockable when there is none."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if writable or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Unlockable(str(path)) from None


def _open_locked(path: Path, op: int) -> int | None:
    """A descriptor of ``path`` locked with ``op`` (LOCK_EX or LOCK_SH), or None when another holds it.
    The file is never removed while locked, but a descriptor is checked to still name the file the path
    names (a lock on a file removed meanwhile would lock nothing)."""
    while True:
        fd = _open(path, op == fcntl.LOCK_EX)
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # removed (or replaced) between open and flock: lock the file that is there now


def _record(folder: Path, what: str, mode: str) -> Path:
    folder.mkdir(exist_ok=True)
    rec = {"pid": os.getpid(), "what": what, "mode": mode, "host": socket.gethostname(),
           "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
           "argv": " ".join(sys.argv)[:500]}
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def workspace_lock(workspace: str | os.PathLike, what: str, *, exclusive: bool,
                   orphan_wait_s: float = ORPHAN_WAIT_S) -> Iterator[None]:
    """Hold the workspace's writer lock (exclusive or shared) for the ``with`` block; raise
    :class:`WorkspaceInUse` at once when it is taken. ``what`` names this holder in the message others
    get ("densprune precompute"). The workspace folder must exist."""
    ws = Path(workspace)
    path, folder = lock_path(ws), ws / HOLDERS_NAME
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    deadline = time.monotonic() + orphan_wait_s
    while True:
        try:
            fd = _open_locked(path, op)
        except _Unlockable:  # a read-only workspace with no lock file: nobody can rewrite it either
            log.debug("%s cannot be written: read without its writer lock", ws)
            yield
            return
        if fd is not None:
            break
        recs = holders(ws)
        if any(r["alive"] for r in recs) or not recs or time.monotonic() > deadline:
            raise WorkspaceInUse(in_use_message(ws, recs))
        time.sleep(0.2)  # taken, but every recorded holder is dead: a child of theirs still exiting
    with _held_guard:
        _held.add(fd)
    mine = None
    try:
        for rec in holders(ws):  # exclusive: nobody else holds it, any record left is a dead holder's
            if exclusive or not rec["alive"]:
                log.warning("%s: taking over the lock of %s: that process is gone", ws, _describe(rec))
                with contextlib.suppress(OSError):
                    Path(rec["file"]).unlink(missing_ok=True)
        try:
            mine = _record(folder, what, "exclusive" if exclusive else "shared")
        except OSError:
            if exclusive:
                raise
            log.debug("%s: no record of this reader (the workspace cannot be written)", ws)
        yield
    finally:
        if mine is not None:
            with contextlib.suppress(OSError):
                mine.unlink(missing_ok=True)
        with _held_guard:
            _held.discard(fd)
        os.close(fd)  # releases the lock


def exclusive_lock(workspace: str | os.PathLike, what: str) -> contextlib.AbstractContextManager[None]:
    """The lock of a process that rewrites the workspace (precompute, recluster)."""
    return workspace_lock(workspace, what, exclusive=True)


def shared_lock(workspace: str | os.PathLike, what: str) -> contextlib.AbstractContextManager[None]:
    """The lock of a process that adds to a complete workspace (plan save, export); a workspace folder
    that does not exist is not locked (the call fails on its own, with its usual message)."""
    if not Path(workspace).is_dir():
        return contextlib.nullcontext()
    return workspace_lock(workspace, what, exclusive=False)


def holds_shared_lock(what: str) -> Callable:
    """Decorator: run ``fn(workspace, ...)`` under the workspace's shared lock."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(workspace, *args, **kwargs):
            with shared_lock(workspace, what):
                return fn(workspace, *args, **kwargs)
        return wrapper
    return decorate
