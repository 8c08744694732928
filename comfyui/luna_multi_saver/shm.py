"""Shared-memory segments, the client's side (the Python twin of ``src/shm/writer.rs``).

A segment is a plain file in the spool directory the daemon announces in its welcome reply (on Linux a tmpfs
directory: that *is* POSIX shared memory). It is created once with ``O_CREAT | O_EXCL`` and mode 0600, sized with
``ftruncate``, mapped once and reused warm for many jobs: creating and faulting in a fresh 12 MB mapping per image
costs 10-15 ms, writing into a warm one costs only the copy.

``multiprocessing.shared_memory`` is deliberately not used: Python's ``resource_tracker`` would unlink segments the
daemon owns when this process exits or is killed. Here the rules are the daemon's:

The 64-byte header (little-endian), exactly as ``src/shm/header.rs``:

====== ==== =====================================================================================
offset size field
====== ==== =====================================================================================
0      8    magic ``LUNASEG\\0``
8      4    header version, 1
12     1    state: 0 = the client owns it (free to write), 1 = the daemon owns it
13     1    flags: bit 0 = detached (the client is gone; the daemon unlinks it on release)
16     4    creator process id
24     8    release count, incremented by the daemon each time it hands the segment back
====== ==== =====================================================================================

A segment is written and submitted only while its state byte is 0. The daemon sets it to 1 before it acknowledges
a job and back to 0 when every file from it is durable. On close, a segment the client owns is unlinked; one the
daemon owns gets the DETACHED flag, and the daemon unlinks it when it is done.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import struct
import sys
import weakref

import numpy as np

from .constants import SEGMENT

# The header layout and the name rules: constants.json (checked against src/shm/ by tests/it/constants.rs).
MAGIC = SEGMENT["magic"].encode("ascii")
HEADER_VERSION = SEGMENT["header_version"]
HEADER_LEN = SEGMENT["header_len"]
STATE_OFFSET = SEGMENT["state_offset"]
FLAGS_OFFSET = SEGMENT["flags_offset"]
PID_OFFSET = SEGMENT["pid_offset"]
RELEASE_COUNT_OFFSET = SEGMENT["release_count_offset"]
STATE_CLIENT = 0
STATE_DAEMON = 1
FLAG_DETACHED = SEGMENT["flag_detached"]

# New segments are rounded up to this many bytes so that slightly different image sizes share segments.
SEGMENT_GRANULE = 1 << 20
# Images (and the metadata blob) start at multiples of this many bytes after the header.
ALIGN = SEGMENT["align"]
MAX_NAME_LEN = SEGMENT["max_name_len"]
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def validate_name(name: str) -> None:
    """Segment names are names, never paths: 1 to 64 of ``A-Z a-z 0-9 _ -``, not starting with ``-``."""
    if not name or len(name) > MAX_NAME_LEN or not _NAME.fullmatch(name):
        raise ValueError(f"invalid segment name {name!r}: 1 to 64 of A-Z a-z 0-9 _ - (not starting with '-')")


def new_header(pid: int) -> bytes:
    """A fresh header: magic, version 1, client-owned, no flags, creator ``pid``, release count 0."""
    header = bytearray(HEADER_LEN)
    struct.pack_into("<8sI", header, 0, MAGIC, HEADER_VERSION)
    struct.pack_into("<I", header, PID_OFFSET, pid & 0xFFFFFFFF)
    return bytes(header)


def _reserve(fd: int, size: int) -> None:
    """Allocates the segment's pages now, so a full tmpfs is a clean ``OSError`` (ENOSPC) here rather than a
    SIGBUS that would kill the process when the copy touches a page that cannot be allocated."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Segment:
    """A segment created and mapped by this process."""

    def __init__(self, spool_dir: str, name: str, capacity: int):
        validate_name(name)
        self.name = name
        self.path = os.path.join(spool_dir, name)
        self.capacity = capacity
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            os.ftruncate(fd, HEADER_LEN + capacity)
            _reserve(fd, HEADER_LEN + capacity)
            self._map = mmap.mmap(fd, HEADER_LEN + capacity)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        self._fd = fd
        self._map[:HEADER_LEN] = new_header(os.getpid())
        # One byte view of the whole mapping; images are written through views of it (no copies).
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self.closed = False

    @property
    def state(self) -> int:
        """The header's state byte: :data:`STATE_CLIENT` or :data:`STATE_DAEMON`."""
        return self._map[STATE_OFFSET]

    @property
    def flags(self) -> int:
        return self._map[FLAGS_OFFSET]

    @property
    def release_count(self) -> int:
        return struct.unpack_from("<Q", self._map, RELEASE_COUNT_OFFSET)[0]

    def client_owned(self) -> bool:
        return not self.closed and self.state == STATE_CLIENT

    def array(self, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """A writable numpy view of ``shape`` little-endian ``dtype`` samples at absolute ``offset``."""
        if not self.client_owned():
            raise RuntimeError(f"segment {self.name} is owned by the daemon; it must not be written")
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if offset < HEADER_LEN or offset + count > HEADER_LEN + self.capacity:
            raise ValueError(f"bytes {offset}..{offset + count} do not fit segment {self.name}")
        return self._bytes[offset : offset + count].view(dtype).reshape(shape)

    def write(self, offset: int, data: bytes) -> None:
        self.array(offset, (len(data),), "u1")[:] = np.frombuffer(data, dtype=np.uint8)

    def memory(self, offset: int, length: int) -> memoryview:
        """A read-only view of ``length`` bytes at ``offset`` (for checksums)."""
        return memoryview(self._bytes[offset : offset + length]).toreadonly()

    def close(self) -> None:
        """Detaches: sets the DETACHED flag, then reads the state, and unlinks the file unless the daemon owns it
        (then the daemon unlinks it on release). The flag is written and the state read with ``pwrite``/``pread``,
        as the daemon does, so the two sides' write-then-read sequences cannot both miss each other. Mirrors
        ``SegmentWriter::detach`` in ``src/shm/writer.rs``."""
        if self.closed:
            return
        self.closed = True
        if hasattr(os, "pwrite"):
            flags = os.pread(self._fd, 1, FLAGS_OFFSET)[0]
            os.pwrite(self._fd, bytes([flags | FLAG_DETACHED]), FLAGS_OFFSET)
            owned_by_client = os.pread(self._fd, 1, STATE_OFFSET)[0] == STATE_CLIENT
        else:
            self._map[FLAGS_OFFSET] = self._map[FLAGS_OFFSET] | FLAG_DETACHED
            owned_by_client = self._map[STATE_OFFSET] == STATE_CLIENT
        del self._bytes
        # If a caller still holds a view, the mapping goes when that view does.
        with contextlib.suppress(BufferError):
            self._map.close()
        os.close(self._fd)
        if owned_by_client:
            with contextlib.suppress(*_UNLINK_GONE_OR_HELD):
                os.unlink(self.path)


# Windows refuses to delete a file another process still has open (the daemon may hold a released segment's handle
# a moment longer): the file is left to the daemon's janitor, which removes segments of dead creators.
_UNLINK_GONE_OR_HELD = (FileNotFoundError, PermissionError) if sys.platform == "win32" else (FileNotFoundError,)


def _close_all(segments: list[Segment]) -> None:
    for segment in segments:
        segment.close()
    segments.clear()


def segment_prefix(client_name: str) -> str:
    """Up to 16 lowercase ASCII letters and digits of the client name (``luna`` if none), as the Rust client."""
    cleaned = "".join(c for c in client_name if c.isascii() and c.isalnum())[:16].lower()
    return cleaned or "luna"


class SegmentPool:
    """A client's warm segments, named ``<prefix>-<pid>-<n>``: hands out the smallest client-owned segment that
    fits, or creates a new one (sizes rounded up to 1 MiB). Mirrors ``SegmentPool`` in ``src/shm/writer.rs``."""

    def __init__(self, spool_dir: str, prefix: str = "luna"):
        self.spool_dir = spool_dir
        self.prefix = prefix
        self._next_id = 0
        self.segments: list[Segment] = []
        # Detach at interpreter exit too (not on SIGKILL: then the daemon sees the creator is dead and unlinks).
        self._finalizer = weakref.finalize(self, _close_all, self.segments)

    def acquire(self, length: int) -> Segment:
        """A client-owned segment with room for ``length`` bytes after the header."""
        fitting = [s for s in self.segments if s.capacity >= length and s.client_owned()]
        if fitting:
            return min(fitting, key=lambda s: s.capacity)
        capacity = max(length, 1)
        capacity = (capacity + SEGMENT_GRANULE - 1) // SEGMENT_GRANULE * SEGMENT_GRANULE
        while True:
            name = f"{self.prefix}-{os.getpid()}-{self._next_id}"
            self._next_id += 1
            try:
                segment = Segment(self.spool_dir, name, capacity)
            except FileExistsError:
                continue  # a leftover of a dead process that had our pid, or another pool: skip the name
            self.segments.append(segment)
            return segment

    def discard(self, segment: Segment) -> None:
        """Drops a segment whose fate is unknown (a submit without a reply): it is detached and never reused."""
        if segment in self.segments:
            self.segments.remove(segment)
        segment.close()

    def close(self) -> None:
        _close_all(self.segments)

    def __len__(self) -> int:
        return len(self.segments)
