"""Recording files: where staged copies live, copying with verification, and clean-up.

A staged path only ever holds a verified file: every attempt writes its own temporary file
(epoch, attempt and a random suffix in the name), so overlapping attempts never write to
the same file; the copy is hashed again from disk before it is renamed into place, and the
rename is atomic.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from pathlib import Path

from temporalio.exceptions import ApplicationError

from messages.activity_io import ERR_CHECKSUM_MISMATCH, ERR_SOURCE_CHANGED

CHUNK = 1024 * 1024  # files stream in 1 MiB chunks
TEMP_SUFFIX = ".part"


class Stopped(Exception):
    """The activity was cancelled while a file was being read: the thread gave up."""


def staging_dir_name(invitation_id: str) -> str:
    """A file-system-safe, collision-free directory name for an invitation id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", invitation_id)[:80]
    return f"{safe}-{hashlib.sha256(invitation_id.encode()).hexdigest()[:8]}"


def staged_rel_path(org_account_id: int, invitation_id: str, source_id: int,
                    source_path: str) -> Path:
    return (Path(str(org_account_id)) / "staged" / staging_dir_name(invitation_id)
            / f"{source_id}-{Path(source_path).name}")


def temp_path(dest: Path, epoch: int, attempt: int) -> Path:
    """This attempt's own file next to `dest` (same file system, so the rename is atomic)."""
    return dest.with_name(f"{dest.name}.e{epoch}-a{attempt}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def sha256_of(path: Path, stop: threading.Event | None = None) -> str | None:
    """The file's sha256, None if it does not exist."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                if stop is not None and stop.is_set():
                    raise Stopped(str(path))
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def copy_verified(source: Path, temp: Path, expected: str, what: str,
                  stop: threading.Event | None = None) -> int:
    """Copy `source` to `temp`, then re-read the copy: both must hash to `expected`.
    Returns the size. A bad source is a business failure (non-retryable); a bad copy is
    retried. `temp` is removed on any failure."""
    digest, size = hashlib.sha256(), 0
    temp.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            src = open(source, "rb")
        except FileNotFoundError:
            raise ApplicationError(f"{what} has no file at {source.name}",
                                   type=ERR_SOURCE_CHANGED, non_retryable=True) from None
        with src, open(temp, "xb") as out:
            while chunk := src.read(CHUNK):
                if stop is not None and stop.is_set():
                    raise Stopped(str(source))
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise ApplicationError(
                f"{what} does not match its checksum: expected sha256 {expected}, read "
                f"{digest.hexdigest()}", type=ERR_CHECKSUM_MISMATCH, non_retryable=True)
        written = sha256_of(temp, stop)
        if written != expected:
            raise ApplicationError(f"the copy of {what} differs from its source ({written})",
                                   type=ERR_CHECKSUM_MISMATCH, non_retryable=False)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return size


def remove_staging_files(root: Path, invitation_id: str, *, temp_only: bool = False,
                         org_account_id: int | None = None) -> int:
    """Files in this invitation's staging directories: all of them (after an undo), or only
    the temporary files that interrupted or superseded attempts left (once the transfer is
    live, when no attempt can write any more). With `org_account_id`, only that
    organisation's directory is looked at (see staged_rel_path); without it, every
    account's directory is scanned (a cost that grows with the number of accounts)."""
    removed = 0
    name = staging_dir_name(invitation_id)
    folders = [root / str(org_account_id) / "staged" / name] if org_account_id is not None \
        else root.glob(f"*/staged/{name}")
    for folder in folders:
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if not temp_only or f.name.endswith(TEMP_SUFFIX):
                f.unlink(missing_ok=True)
                removed += 1
        if not temp_only:
            try:
                folder.rmdir()
            except OSError:  # not empty: a stale attempt is still writing (its fence fails)
                pass
    return removed
