"""All or nothing for lake writes: a commit log that readers honour, one writer at a time, and
the removal of what a killed writer left behind.

A write (one `Lake.append`, or one import: several appends in one `Lake.transaction()`) has an
id and names its files `part-<id>-<n>.parquet`, each written to a hidden temporary name and
renamed into place. The write becomes visible only when its commit marker
`_commits/<id>.json` (which lists its files and row counts) appears, after all its files:

- readers take the set of committed ids *before* they list the files and keep only files of
  those ids, so every write they see had all its files in place when they listed;
- a writer holds `_writer.lock` (an exclusive `flock`, released by the kernel when the process
  dies, even by SIGKILL) from start to commit, and marks itself in `_pending/<id>` before it
  writes its first file;
- the next writer, holding the lock, finds a `_pending/<id>` without a commit: its writer is
  dead, so it deletes that id's files, the hidden temporaries and the day folders they leave
  empty, then the marker.

A lake written before commit markers existed has no `_commits` folder and every file in it is
visible. The first transaction on it adopts the files already there: it fills a hidden folder
with one marker per existing id and renames it to `_commits` in one step, before writing
anything. A reader that found no `_commits` checks again after listing, and lists again by the
markers if one has appeared meanwhile.

Guarantee: against the death of the process (kill -9 included). Files are not fsynced, so a
power loss may still lose a committed write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

COMMITS, PENDING, LOCK = "_commits", "_pending", "_writer.lock"
# A failpoint for tests of crashes: "after-file:N" stops the writer after its N-th data file,
# "before-commit" after its last one; it then waits (to be killed) instead of going on.
FAILPOINT_ENV = "SHIPDELAY_LAKE_FAILPOINT"


def write_id(path: Path) -> str:
    """The id of the write a data file belongs to: `part-<id>[-<n>].parquet` -> `<id>`."""
    return path.name[len("part-"):-len(".parquet")].split("-", 1)[0]


def committed_ids(root: Path) -> frozenset[str] | None:
    """Ids of the committed writes, or None for a lake without a commit log (all visible)."""
    try:
        names = os.listdir(root / COMMITS)
    except FileNotFoundError:
        return None
    return frozenset(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))


def visible(root: Path, list_files, extra: Iterable[str] = ()) -> list[Path]:
    """The files of `list_files()` that belong to committed writes (or to `extra` ids: the
    caller's own open transaction), listed after the committed set was read."""
    committed = committed_ids(root)
    files = list_files()
    if committed is None:
        committed = committed_ids(root)
        if committed is None:  # no transaction has started: every file predates them
            return files
        files = list_files()
    keep = committed | frozenset(extra)
    return [f for f in files if write_id(f) in keep]


@dataclass
class Transaction:
    """One open write: the id its files carry and what it wrote so far."""

    id: str
    root: Path
    files: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    _count: int = 0

    def next_name(self) -> str:
        """A data file name of this write, unique within it."""
        self._count += 1
        return f"part-{self.id}-{self._count}.parquet"

    def wrote(self, table: str, path: Path, rows: int) -> None:
        self.files.setdefault(table, []).append(str(path.relative_to(self.root)))
        self.rows[table] = self.rows.get(table, 0) + rows
        _failpoint(sum(map(len, self.files.values())))


@contextmanager
def transaction(root: Path) -> Iterator[Transaction]:
    """Hold the writer lock, clean up after dead writers, and commit what the block wrote;
    an exception removes this write's files instead (and the block's error goes on)."""
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(root):
        recover(root)
        _ensure_log(root)
        txn = Transaction(uuid.uuid4().hex[:16], root)
        pending = root / PENDING / txn.id
        _write_atomic(pending, b"")
        try:
            yield txn
        except BaseException:
            _remove_files(root, txn.id)
            pending.unlink(missing_ok=True)
            raise
        if txn.files:
            _failpoint(None)
            manifest = {"id": txn.id, "committed_at": _utc_now(), "files": txn.files,
                        "rows": txn.rows}
            _write_atomic(root / COMMITS / f"{txn.id}.json", json.dumps(manifest).encode())
        pending.unlink()


def recover(root: Path) -> list[str]:
    """Remove what writers killed midway left: their files, temporaries, emptied day folders
    and pending markers. Call with the writer lock held. Returns the ids cleaned up."""
    try:
        dead = sorted(os.listdir(root / PENDING))
    except FileNotFoundError:
        return []
    committed = committed_ids(root) or frozenset()
    cleaned = []
    for txid in dead:
        if txid.startswith("."):  # a marker's own temporary
            (root / PENDING / txid).unlink(missing_ok=True)
            continue
        if txid not in committed:
            _remove_files(root, txid)
            cleaned.append(txid)
        (root / PENDING / txid).unlink(missing_ok=True)
    if dead:
        for tmp in _table_folders(root, ".*.tmp"):
            tmp.unlink(missing_ok=True)
        for folder in _table_folders(root, "day=*"):
            _rmdir_if_empty(folder)
    for stale in root.glob(f".{COMMITS}-*"):  # an adoption killed before its rename
        shutil.rmtree(stale, ignore_errors=True)
    return cleaned


@contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another writer of this lake
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _ensure_log(root: Path) -> None:
    """Give a lake without a commit log one, adopting every file already in it, in one rename."""
    if (root / COMMITS).exists():
        return
    staging = root / f".{COMMITS}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    for txid in {write_id(f) for f in _table_folders(root, "part-*.parquet")}:
        (staging / f"{txid}.json").write_text('{"adopted": true}')
    os.rename(staging, root / COMMITS)


def _table_folders(root: Path, pattern: str) -> list[Path]:
    """Entries matching `pattern` in every table folder and its day folders."""
    out = []
    for table in root.iterdir():
        if table.is_dir() and not table.name.startswith(("_", ".")):
            out.extend(table.glob(pattern))
            out.extend(table.glob(f"day=*/{pattern}"))
    return out


def _remove_files(root: Path, txid: str) -> None:
    for f in _table_folders(root, f"part-{txid}-*.parquet"):
        f.unlink(missing_ok=True)
        _rmdir_if_empty(f.parent)


def _rmdir_if_empty(folder: Path) -> None:
    if folder.name.startswith("day="):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep
            pass


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _failpoint(files_written: int | None) -> None:
    """Stop here, waiting to be killed, if the failpoint names this moment (tests only)."""
    point = os.environ.get(FAILPOINT_ENV)
    if not point:
        return
    hit = (point == "before-commit" and files_written is None) or (
        files_written is not None and point == f"after-file:{files_written}")
    if hit:
        os.write(2, f"failpoint {point} reached\n".encode())  # stderr itself: no wrapper
        while True:
            time.sleep(1)


# -- whole lakes: `Lake.rewrite` builds a new lake folder beside the current one -----------------
BUILD_LOCK = ".building.lock"


@contextmanager
def new_lake_folder(link: Path) -> Iterator[Path]:
    """A new `<link>-<hex>` folder for a lake being built. It appears (by a rename) already
    holding a lock file that this process keeps locked until the block ends and removes then,
    so `remove_dead_builds` can tell the folder of a killed build from a live one."""
    name = f"{link.name}-{uuid.uuid4().hex[:12]}"
    hidden = link.parent / f".{name}.building"
    hidden.mkdir()
    fd = os.open(hidden / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, link.parent / name)
        yield link.parent / name
    finally:
        (link.parent / name / BUILD_LOCK).unlink(missing_ok=True)  # still locked: no one
        os.close(fd)                                               # takes it for dead


def remove_dead_builds(link: Path) -> list[Path]:
    """Remove the folders of lake builds whose process died (and old lakes set aside for
    removal); the current lake and live builds are kept. Returns what was removed."""
    removed = []
    pattern = re.compile(rf"\.?{re.escape(link.name)}-[0-9a-f]{{12}}(\.building|\.trash)?")
    for entry in link.parent.glob(f"*{link.name}-*"):
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        if match.group(1) == ".trash" or _dead_build(entry, link):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _dead_build(folder: Path, link: Path) -> bool:
    lock = folder / BUILD_LOCK
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:  # a finished lake; or a build killed before its lock existed
        return folder.name.endswith(".building") and time.time() - folder.stat().st_mtime > 60
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its build is running
        try:
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False  # it finished as we looked
        if link.is_symlink() and os.path.realpath(link) == os.path.realpath(folder):
            lock.unlink()  # swapped in, then its process died before removing the lock
            return False
        return True
    finally:
        os.close(fd)
