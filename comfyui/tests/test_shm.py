"""Shared-memory segments: the header exactly as src/shm/header.rs, owner-only files, warm reuse only while the
client owns a segment, and the detach rules on close."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import PACK
from helpers import FakeTensor, noise
from luna_multi_saver import shm


def daemon_sets_state(segment: shm.Segment, state: int) -> None:
    """What the daemon does: a single-byte pwrite of the state."""
    fd = os.open(segment.path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([state]), shm.STATE_OFFSET)
    finally:
        os.close(fd)


def test_header_layout_is_the_daemons(tmp_path):
    segment = shm.Segment(str(tmp_path), "t-1", 1000)
    head = (tmp_path / "t-1").read_bytes()[:64]
    assert head[:8] == b"LUNASEG\0"
    assert struct.unpack_from("<I", head, 8)[0] == 1
    assert head[12] == 0 and head[13] == 0
    assert struct.unpack_from("<I", head, 16)[0] == os.getpid()
    assert struct.unpack_from("<Q", head, 24)[0] == 0
    assert head[14:16] == b"\0\0" and head[20:24] == b"\0" * 4 and head[32:] == b"\0" * 32
    assert shm.new_header(1234)[16:20] == struct.pack("<I", 1234)
    segment.close()


def test_segments_are_owner_only_files_of_the_right_size(tmp_path):
    pool = shm.SegmentPool(str(tmp_path), "t")
    segment = pool.acquire(3 * 1024 * 1024 + 1)
    info = os.stat(segment.path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == shm.HEADER_LEN + 4 * 1024 * 1024, "rounded up to whole MiB"
    assert segment.name == f"t-{os.getpid()}-0"
    pool.close()


def test_creation_is_exclusive_and_taken_names_are_skipped(tmp_path):
    (tmp_path / f"t-{os.getpid()}-0").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        shm.Segment(str(tmp_path), f"t-{os.getpid()}-0", 10)
    pool = shm.SegmentPool(str(tmp_path), "t")
    assert pool.acquire(10).name == f"t-{os.getpid()}-1"
    assert (tmp_path / f"t-{os.getpid()}-0").read_bytes() == b"someone else's"
    pool.close()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", ".hidden", "a b", "x" * 65, "é"])
def test_segment_names_are_names(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid segment name"):
        shm.Segment(str(tmp_path), bad, 10)


def test_float32_pixels_are_copied_as_little_endian_without_conversion(tmp_path):
    segment = shm.Segment(str(tmp_path), "t-px", 1 << 20)
    image = noise()[0]
    view = segment.array(128, image.shape, "<f4")
    np.copyto(view, image, casting="no")  # "no": proves there is no dtype conversion on the way
    del view
    raw = (tmp_path / "t-px").read_bytes()[128 : 128 + image.nbytes]
    assert raw == image.astype("<f4").tobytes()
    segment.close()


def test_strided_tensor_views_are_copied_without_an_intermediate(tmp_path):
    segment = shm.Segment(str(tmp_path), "t-st", 1 << 20)
    base = noise(1, 40, 80)[0]
    strided = base[::2, ::2]  # not contiguous
    np.copyto(segment.array(64, strided.shape, "<f4"), FakeTensor(strided).numpy())
    got = np.frombuffer((tmp_path / "t-st").read_bytes()[64 : 64 + strided.nbytes], dtype="<f4")
    assert (got.reshape(strided.shape) == strided).all()
    segment.close()


def test_only_client_owned_segments_are_reused(tmp_path):
    pool = shm.SegmentPool(str(tmp_path), "t")
    first = pool.acquire(100)
    daemon_sets_state(first, shm.STATE_DAEMON)
    with pytest.raises(RuntimeError, match="owned by the daemon"):
        first.array(64, (4,), "u1")
    second = pool.acquire(100)
    assert second is not first, "a daemon-owned segment is never handed out"
    daemon_sets_state(first, shm.STATE_CLIENT)
    assert pool.acquire(100) in (first, second)
    assert len(pool) == 2
    daemon_sets_state(second, shm.STATE_DAEMON)
    assert pool.acquire(100) is first, "released: reused warm"
    pool.close()


def test_the_smallest_fitting_free_segment_is_reused(tmp_path):
    pool = shm.SegmentPool(str(tmp_path), "t")
    big = pool.acquire(5 << 20)
    daemon_sets_state(big, shm.STATE_DAEMON)
    small = pool.acquire(1 << 20)
    daemon_sets_state(big, shm.STATE_CLIENT)
    assert (big.capacity, small.capacity) == (5 << 20, 1 << 20)
    assert pool.acquire(100) is small
    assert pool.acquire(2 << 20) is big
    pool.close()


def test_close_unlinks_client_owned_and_detaches_daemon_owned(tmp_path):
    pool = shm.SegmentPool(str(tmp_path), "t")
    busy = pool.acquire(10)
    daemon_sets_state(busy, shm.STATE_DAEMON)
    idle = pool.acquire(10)
    pool.close()
    assert not os.path.exists(idle.path), "an idle segment goes with its client"
    assert os.path.exists(busy.path), "a daemon-owned segment survives its client"
    head = (tmp_path / busy.name).read_bytes()[:64]
    assert head[shm.FLAGS_OFFSET] & shm.FLAG_DETACHED, "and is marked so the daemon unlinks it on release"
    assert head[shm.STATE_OFFSET] == shm.STATE_DAEMON


def test_an_exiting_process_detaches_its_segments(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(PACK)!r})
        from luna_multi_saver import shm
        pool = shm.SegmentPool({str(tmp_path)!r}, "x")
        busy = pool.acquire(10)
        fd = os.open(busy.path, os.O_RDWR); os.pwrite(fd, b"\\x01", 12); os.close(fd)
        pool.acquire(10)
        print(busy.name)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    busy = out.stdout.strip()
    assert sorted(os.listdir(tmp_path)) == [busy]
    assert (tmp_path / busy).read_bytes()[shm.FLAGS_OFFSET] & shm.FLAG_DETACHED
