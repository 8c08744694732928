"""The formats that keep more than 8 bits, for the local save: 16-bit PNG (written here with zlib, since Pillow
cannot write 16-bit colour PNG) and OpenEXR (through the ``OpenEXR`` package, the Academy's own bindings, when it
is installed). Both take the samples as given, never the 8-bit image, exactly as the daemon does (PROTOCOL.md
sections 10.7 and 12.6)."""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

from .pixels import srgb_to_linear, to_float32, to_uint16

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _text_chunk(key: str, value: str) -> bytes:
    try:
        return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        # As PIL's add_text: iTXt (uncompressed, no language) for a value that is not Latin-1.
        return _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))


def write_png16(out: BinaryIO, image: np.ndarray, level: int, text: list[tuple[str, str]]) -> None:
    """A 16-bit PNG of ``image`` ``[H, W, C]`` at zlib ``level``, rows unfiltered, text chunks in order. The
    daemon's files decode to the same samples (its compression differs, never its pixels)."""
    height, width, channels = image.shape
    samples = to_uint16(image).astype(">u2", copy=False)
    rows = samples.reshape(height, width * channels).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, _COLOR_TYPES[channels], 0, 0, 0)))
    for key, value in text:
        out.write(_text_chunk(key, value))
    out.write(_chunk(b"IDAT", zlib.compress(raw, level)))
    out.write(_chunk(b"IEND", b""))


def exr_available() -> bool:
    """Whether the OpenEXR package is importable (``pip install openexr``)."""
    try:
        import OpenEXR  # noqa: F401
    except ImportError:
        return False
    return True


def exr_planes(image: np.ndarray, half: bool, color_space: str) -> dict[str, np.ndarray]:
    """Channel name -> plane, as the daemon stores them: ``Y`` or ``R``, ``G``, ``B`` (``A``); colour channels
    linearised for ``srgb`` input; half floats if ``half``."""
    names = {1: ("Y",), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}[image.shape[2]]
    values = to_float32(image)
    planes = {}
    for c, name in enumerate(names):
        plane = values[:, :, c]
        if name != "A" and color_space == "srgb":
            plane = srgb_to_linear(plane)
        planes[name] = np.ascontiguousarray(plane.astype(np.float16) if half else plane)
    return planes


def write_exr(path: str, image: np.ndarray, half: bool, color_space: str, text: list[tuple[str, str]]) -> None:
    """An EXR of ``image`` at ``path`` (ZIP compression), each text pair a ``string`` header attribute."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    for key, value in text:
        header[key] = value
    OpenEXR.File(header, exr_planes(image, half, color_space)).write(path)
