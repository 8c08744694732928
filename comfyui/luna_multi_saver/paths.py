"""Confinement and never-overwriting atomic writes (SPEC section 4), the same rules as the daemon's
``src/output/confine.rs`` and ``src/output/write.rs``.

Refused in any part of ``save_path`` or a file name (with a :class:`PathRefused` naming the part and the reason):
an absolute path, ``..``, ``:`` (drive letters, UNC ``\\\\?\\`` prefixes start with a separator and are absolute),
NUL and other control characters, the characters Windows forbids (``< > " | ? *``), Windows reserved device names
(``CON``, ``NUL``, ``COM1``... also with an extension, such as ``con.png``) and names ending in ``.`` or space.
Directories are created one level at a time and each level is resolved before the next is created, so a symlink
inside the output tree that points outside is refused before anything is created or written through it.

Files are written to a hidden temp file in the target directory, flushed and fsynced, then hard-linked to the final
name (``os.link`` fails if the name exists, so the decision is atomic) and the temp file is removed. A taken name
gets ``_00001``, ``_00002``, ... appended; nothing is ever checked for existence first, nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
FORBIDDEN_CHARS = frozenset('<>"|?*')
MAX_COUNTER = 99_999
# Temp files: hidden, in the target directory (the daemon's janitor knows the pattern, src/output/write.rs).
TEMP_PREFIX, TEMP_SUFFIX = ".luna-", ".tmp"
# errno values meaning "this file system has no hard links".
_NO_HARD_LINKS = frozenset([errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK])


class PathRefused(ValueError):
    """A save path or file name that would leave the output directory or is not portable."""


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def check_part(what: str, part: str) -> None:
    """Checks one path component (a directory name or a file name)."""

    def refuse(reason: str) -> PathRefused:
        return PathRefused(f"{what} {part!r} is not allowed: {reason}")

    if any(_is_control(ch) for ch in part):
        raise refuse("it contains NUL or control characters")
    if part == "..":
        raise refuse("'..' would leave the output directory")
    if ":" in part:
        raise refuse("':' (drive letters, alternate streams) is not allowed")
    if any(ch in FORBIDDEN_CHARS for ch in part):
        raise refuse("it contains a character Windows forbids in file names")
    base = part.split(".", 1)[0].rstrip()
    if base.upper() in WINDOWS_RESERVED:
        raise refuse("it is a reserved device name on Windows")
    if part.endswith((".", " ")) and part != ".":
        raise refuse("names ending in '.' or ' ' are not portable")


def check_stem(stem: str, what: str = "filename") -> None:
    """A file name stem: one non-empty component without separators."""
    if stem in ("", "."):
        raise PathRefused(f"{what} {stem!r} is not allowed: it is empty")
    if "/" in stem or "\\" in stem:
        raise PathRefused(f"{what} {stem!r} is not allowed: it contains a path separator")
    check_part(what, stem)


def split_sub_path(sub_path: str) -> list[str]:
    """Checks a relative sub-path (``/`` or ``\\`` separated) without touching the disk; returns its parts."""
    if sub_path.startswith(("/", "\\")) or os.path.isabs(sub_path):
        raise PathRefused(f"save_path {sub_path!r} is not allowed: absolute paths would leave the output directory")
    parts = [p for p in sub_path.replace("\\", "/").split("/") if p not in ("", ".")]
    for part in parts:
        check_part("save_path component", part)
    return parts


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_dir(root: str, sub_path: str) -> str:
    """Creates ``root/sub_path`` one level at a time, refusing any level that resolves outside ``root``.
    Returns the resolved directory."""
    if not os.path.isabs(root):
        raise PathRefused(f"output directory {root!r} must be an absolute path")
    parts = split_sub_path(sub_path)
    os.makedirs(root, exist_ok=True)
    real_root = os.path.realpath(root)
    current = real_root
    for part in parts:
        candidate = os.path.join(current, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(candidate)
        resolved = os.path.realpath(candidate)
        if not _inside(resolved, real_root) or not os.path.isdir(resolved):
            raise PathRefused(
                f"save_path {sub_path!r} is not allowed: {candidate} resolves to {resolved}, outside the output "
                f"directory {real_root}"
            )
        current = resolved
    return current


@dataclass(frozen=True)
class WrittenFile:
    """A file durably on disk under its final name."""

    path: str
    bytes: int


def fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: str, final: str) -> bool:
    """Gives ``temp``'s content the name ``final`` unless that name exists. Returns False if it is taken."""
    try:
        os.link(temp, final)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS and os.name != "nt":
            raise
    # No hard links on this file system: reserve the name exclusively, then move the content over it.
    try:
        os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    os.replace(temp, final)
    return True


def write_new_file(directory: str, stem: str, ext: str, fill: Callable[[BinaryIO], None]) -> WrittenFile:
    """Writes ``<stem>.<ext>`` (or ``<stem>_00001.<ext>``...) in ``directory`` atomically, never overwriting."""
    check_stem(stem)
    temp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
        for counter in range(MAX_COUNTER + 1):
            name = f"{stem}.{ext}" if counter == 0 else f"{stem}_{counter:05d}.{ext}"
            final = os.path.join(directory, name)
            if publish(temp, final):
                fsync_dir(directory)
                return WrittenFile(path=final, bytes=size)
        raise FileExistsError(f"no free file name for {os.path.join(directory, stem)}.{ext} (counter exhausted)")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
