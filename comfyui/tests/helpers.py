"""Readers for what the savers write (PNG chunks, WebP/JPEG EXIF read the way ComfyUI's frontend reads it),
test images, and a scriptable fake daemon for failure cases the real one cannot be made to show on demand."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
from PIL import Image

# -- reading files ------------------------------------------------------------------------------------------------


def png_chunks(path: str | Path) -> list[tuple[bytes, bytes]]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        chunks.append((kind, data[i + 8 : i + 8 + length]))
        i += 12 + length
    return chunks


def png_text(path: str | Path) -> list[tuple[str, str]]:
    """(key, value) of every tEXt/iTXt chunk, in file order."""
    out = []
    for kind, body in png_chunks(path):
        if kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            out.append((key.decode("latin-1"), value.decode("latin-1")))
        elif kind == b"iTXt":
            key, rest = body.split(b"\0", 1)
            rest = rest[2:]  # compression flag and method
            _lang, rest = rest.split(b"\0", 1)
            _tkey, value = rest.split(b"\0", 1)
            out.append((key.decode("latin-1"), value.decode("utf-8")))
    return out


def webp_chunks(path: str | Path) -> list[tuple[bytes, bytes]]:
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    chunks, i = [], 12
    while i + 8 <= len(data):
        kind = data[i : i + 4]
        (length,) = struct.unpack("<I", data[i + 4 : i + 8])
        chunks.append((kind, data[i + 8 : i + 8 + length]))
        i += 8 + length + (length & 1)
    return chunks


def tiff_ifd0(tiff: bytes) -> dict[int, tuple[int, bytes]]:
    """IFD0 of a TIFF/EXIF block: tag -> (type, raw value bytes), the way ComfyUI's frontend walks it."""
    little = tiff[:2] == b"II"
    end = "<" if little else ">"
    (ifd,) = struct.unpack(end + "I", tiff[4:8])
    (count,) = struct.unpack(end + "H", tiff[ifd : ifd + 2])
    out = {}
    for n in range(count):
        entry = ifd + 2 + 12 * n
        tag, kind, values = struct.unpack(end + "HHI", tiff[entry : entry + 8])
        size = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}.get(kind, 1) * values
        if size <= 4:
            raw = tiff[entry + 8 : entry + 8 + size]
        else:
            (offset,) = struct.unpack(end + "I", tiff[entry + 8 : entry + 12])
            raw = tiff[offset : offset + size]
        out[tag] = (kind, raw)
    return out


def comfy_frontend_exif(tiff: bytes) -> dict[str, str]:
    """What ComfyUI's frontend (getWebpMetadata) makes of an EXIF block: every IFD0 ASCII tag split at its first
    colon into key and value."""
    if tiff.startswith(b"Exif\0\0"):
        tiff = tiff[6:]
    out = {}
    for kind, raw in tiff_ifd0(tiff).values():
        if kind == 2:
            text = raw[:-1].decode("utf-8")
            key, _, value = text.partition(":")
            out[key] = value
    return out


def webp_exif(path: str | Path) -> bytes:
    """The first EXIF chunk's payload."""
    return next(body for kind, body in webp_chunks(path) if kind == b"EXIF")


def read_png16(path: Path) -> np.ndarray:
    """A plain 16-bit PNG decoder (all five filters), independent of both writers."""
    data = path.read_bytes()
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    assert depth == 16
    channels = {0: 1, 2: 3, 6: 4}[color]
    bpp, stride = 2 * channels, 2 * channels * width
    raw = zlib.decompress(idat)
    prior = bytearray(stride)
    rows = []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prior = line
    return np.frombuffer(b"".join(rows), ">u2").reshape(height, width, channels).astype(np.uint16)


def jxl_boxes(path: str | Path) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every ISOBMFF box of a JPEG XL container; [] for a bare codestream."""
    data = Path(path).read_bytes()
    if data[:2] == b"\xff\x0a":
        return []
    assert data[:12] == b"\0\0\0\x0cJXL \r\n\x87\n", data[:12]
    boxes, at = [], 0
    while at < len(data):
        (size,), kind, header = struct.unpack(">I", data[at : at + 4]), data[at + 4 : at + 8], 8
        if size == 1:
            (size,), header = struct.unpack(">Q", data[at + 8 : at + 16]), 16
        size = size or len(data) - at
        assert at + size <= len(data), f"box {kind!r} at {at} runs past the end"
        boxes.append((kind, data[at + header : at + size]))
        at += size
    return boxes


def jxl_exif(path: str | Path) -> bytes | None:
    """The TIFF of a JPEG XL container's first ``Exif`` box (its 4-byte TIFF header offset applied), or None."""
    body = next((body for kind, body in jxl_boxes(path) if kind == b"Exif"), None)
    if body is None:
        return None
    (offset,) = struct.unpack(">I", body[:4])
    return body[4 + offset :]


def jpeg_exif(path: str | Path) -> bytes | None:
    """The APP1 Exif payload (with its ``Exif\\0\\0`` prefix), or None."""
    data = Path(path).read_bytes()
    i = 2
    while i < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\0\0":
            return data[i + 4 : i + 2 + length]
        if marker == 0xDA:
            return None
        i += 2 + length
    return None


def user_comment(path: str | Path) -> str:
    exif = Image.open(path).getexif()
    raw = exif.get_ifd(0x8769)[0x9286]
    assert raw[:8] == b"UNICODE\0", raw[:8]
    return raw[8:].decode("utf-16-be")


def decoded(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- test images --------------------------------------------------------------------------------------------------


def noise(batch: int = 1, height: int = 48, width: int = 64, channels: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, height, width, channels), dtype=np.float32)


def flat(batch: int = 1, height: int = 48, width: int = 64, value: float = 0.5) -> np.ndarray:
    return np.full((batch, height, width, 3), value, dtype=np.float32)


def smooth(batch: int = 1, height: int = 48, width: int = 64) -> np.ndarray:
    """A wide-range gradient: high variance, almost no edges (a 'blurred' image)."""
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, None, :, None]
    return np.broadcast_to(ramp, (batch, height, width, 3)).copy()


def reference_json(reference: Path) -> tuple[dict, dict]:
    prompt = json.loads((reference / "single_prompt.json").read_text())
    extra = json.loads((reference / "extra_pnginfo.json").read_text())
    return prompt, extra


class FakeTensor:
    """Duck-typed like a CPU torch tensor (detach/cpu/numpy), so tests need no torch."""

    def __init__(self, array: np.ndarray):
        self._array = array
        self.shape = array.shape

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array

    def __len__(self) -> int:
        return len(self._array)


# -- a fake daemon ------------------------------------------------------------------------------------------------

Handler = Callable[["FakeDaemon", socket.socket, dict], bool]


def send(conn: socket.socket, message: dict) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    conn.sendall(struct.pack(">I", len(body)) + body)


def recv(conn: socket.socket) -> dict | None:
    head = _recv_exact(conn, 4)
    if head is None:
        return None
    body = _recv_exact(conn, struct.unpack(">I", head)[0])
    return msgpack.unpackb(body, raw=False) if body is not None else None


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = conn.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def error(code: int, name: str, message: str, **extra) -> dict:
    return {"type": "error", "code": code, "name": name, "message": message, **extra}


class FakeDaemon:
    """A Unix-socket server speaking just enough protocol. ``on_submit(fake, conn, job)`` decides what a submit
    gets; it returns False to hang up without replying. ``on_hello`` may replace the welcome."""

    def __init__(self, on_submit: Handler | None = None, on_hello: Callable[[dict], dict] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="luna-fake-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.spool = self.dir / "spool"
        self.spool.mkdir(mode=0o700)
        self.socket = str(self.dir / "fake.sock")
        self.on_submit = on_submit
        self.on_hello = on_hello
        self.requests: list[dict] = []
        self.connections: list[socket.socket] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.socket)
        self._server.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def welcome(self) -> dict:
        return {
            "type": "welcome",
            "version": 1,
            "daemon_version": "fake",
            "spool_dir": str(self.spool),
            "max_frame_len": 1 << 20,
            "segment_header_len": 64,
        }

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        self.connections.append(conn)
        with conn:
            while True:
                message = recv(conn)
                if message is None:
                    return
                self.requests.append(message)
                kind = message.get("type")
                if kind == "hello":
                    reply = self.on_hello(message) if self.on_hello else self.welcome()
                    if reply is None:
                        return
                    send(conn, reply)
                elif kind == "submit":
                    if self.on_submit is None or not self.on_submit(self, conn, message):
                        return
                else:
                    send(conn, error(17, "internal", f"the fake does not answer {kind}"))

    def take_ownership(self, job: dict) -> None:
        """What the real daemon does before accepting: state byte 1 in every segment of the job."""
        for slot in job["slots"]:
            for image in slot["images"]:
                fd = os.open(self.spool / image["segment"], os.O_RDWR)
                try:
                    os.pwrite(fd, b"\x01", 12)
                finally:
                    os.close(fd)

    def hang_up(self) -> None:
        """Closes every client connection, as a daemon restart would."""
        for conn in self.connections:
            conn.shutdown(socket.SHUT_RDWR)
        self.connections.clear()

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_node(daemon_save: bool = False, **inputs):
    """Runs the Luna Multi Saver node with the required inputs filled in; returns (node, result)."""
    from luna_multi_saver.node import LunaMultiSaver

    base = {
        "save_path": "",
        "filename": "img",
        "daemon_save": daemon_save,
        "save_mode": "parallel",
        "quality_gate": "disabled",
        "min_quality_threshold": 0.3,
    }
    saver = LunaMultiSaver()
    return saver, saver.save_images(**{**base, **inputs})


def save_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs) -> tuple[Path, Path, dict]:
    """Runs the node twice on the same inputs: saving locally into ``output/local``, then through the daemon into
    ``output/daemon``; returns both roots and the daemon job's final status."""
    from conftest import folder_paths

    roots = comfy_dirs.output / "local", comfy_dirs.output / "daemon"
    for daemon_save, root in zip((False, True), roots, strict=True):
        monkeypatch.setattr(folder_paths, "output_directory", str(root))
        saver, _ = run_node(daemon_save, **inputs)
    assert saver.last_job is not None, "the daemon must take the job"
    with daemon.client("test-waiter") as c:
        status = c.wait(saver.last_job.job_id)
    return *roots, status


def same_files_in_both_modes(
    daemon, comfy_dirs, monkeypatch, settled: tuple[str, ...] = ("written",), **inputs
) -> tuple[Path, Path]:
    """`save_in_both_modes`, checking that every image ended in one of the ``settled`` states and that both modes
    wrote the same file names."""
    local, remote, status = save_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert all(i["state"] in settled for i in status["images"]), status
    assert files_under(local) == files_under(remote)
    return local, remote
