"""AVIF for the local save, through Pillow (11.3 and newer bundle libavif; ComfyUI 0.3.64 pins 11.3.0).

The file carries the same Exif item as the daemon's, byte for byte: the tags and values of
:func:`metadata.build_exif` (the WebP and JPEG EXIF) laid out as the daemon lays them out (:func:`exif_bytes`), as
raw TIFF, which libavif frames exactly as the daemon does (a zero TIFF-header offset, then the TIFF bytes) in an
``Exif`` item of the ``meta`` box, where the ComfyUI frontend reads the workflow back. Colour is encoded at full
resolution (4:4:4) and full range like the daemon's; gray images are stored as RGB, like the daemon's.

Pillow's AVIF encoder takes 8-bit samples only, so a 10-bit request is written at 8 bits with a note; and where
Pillow has no AVIF at all, the image is saved as a PNG with a note (16-bit for a 10-bit request): never lost.
Pixels differ from the daemon's (another AV1 encoder: libaom through libavif, not rav1e); the tests bound how much.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from PIL import Image, features

from . import metadata

MISSING_NOTE = "AVIF needs Pillow with AVIF support (Pillow 11.3 or newer) for local saves; saved as a PNG instead"
EIGHT_BIT_NOTE = "saved as 8-bit AVIF: Pillow's AVIF encoder takes 8-bit samples (the daemon writes 10-bit)"


def available() -> bool:
    """Whether this Pillow can write AVIF."""
    try:
        return bool(features.check("avif"))
    except (ValueError, KeyError):  # a Pillow older than the "avif" feature name
        return False


def check_options(quality: int, speed: int, bit_depth: int) -> None:
    """Raises ValueError, in the daemon's words, for an option the daemon refuses."""
    if bit_depth not in (8, 10):
        raise ValueError(f"avif_bit_depth {bit_depth} is not 8 or 10")
    if not 1 <= quality <= 100:
        raise ValueError(f"avif_quality {quality} is outside 1..=100")
    if not 1 <= speed <= 10:
        raise ValueError(f"avif_speed {speed} is outside 1..=10")


def exif_bytes(meta: metadata.JobMetadata, facts: metadata.ImageFacts) -> bytes:
    """The TIFF block of the WebP/JPEG EXIF (same tags and values as :func:`metadata.build_exif`) laid out byte for
    byte as the daemon lays it out (``src/encode/metadata.rs``): big-endian; IFD0 = the ASCII entries sorted by tag
    plus the Exif IFD pointer; the Exif IFD with the UserComment; then every value longer than 4 bytes, in entry
    order, each padded to an even length. No ``Exif\\0\\0`` prefix: libavif adds the item's TIFF-header offset."""
    ascii_entries = []
    if meta.prompt is not None:
        ascii_entries.append((metadata.PROMPT_TAG, f"prompt:{meta.prompt}"))
    for i, (key, value) in enumerate(meta.extra_pnginfo):
        ascii_entries.append((metadata.FIRST_EXTRA_TAG - i, f"{key}:{value}"))
    entries = sorted(((tag, 2, text.encode("utf-8") + b"\0") for tag, text in ascii_entries), key=lambda e: e[0])
    comment = b"UNICODE\0" + metadata.summary_text(meta, facts).encode("utf-16-be")
    ifd0_len = 2 + 12 * (len(entries) + 1) + 4
    exif_ifd_offset = 8 + ifd0_len
    data_offset = exif_ifd_offset + 2 + 12 + 4
    data = bytearray()

    def entry(tag: int, kind: int, value: bytes) -> bytes:
        nonlocal data_offset
        if len(value) <= 4:
            return struct.pack(">HHI", tag, kind, len(value)) + value.ljust(4, b"\0")
        out = struct.pack(">HHII", tag, kind, len(value), data_offset)
        data.extend(value + (b"\0" if len(value) % 2 else b""))
        data_offset += len(value) + len(value) % 2
        return out

    out = bytearray(b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", len(entries) + 1))
    for tag, kind, value in entries:
        out += entry(tag, kind, value)
    out += struct.pack(">HHII", metadata.EXIF_IFD_POINTER, 4, 1, exif_ifd_offset) + struct.pack(">I", 0)
    out += struct.pack(">H", 1) + entry(metadata.USER_COMMENT_TAG, 7, comment) + struct.pack(">I", 0)
    return bytes(out + data)


def save(out: BinaryIO, image: Image.Image, quality: int, speed: int, exif: bytes | None) -> None:
    """Writes ``image`` (L, RGB or RGBA, 8-bit) as AVIF at ``quality`` and ``speed``."""
    if image.mode == "L":
        image = image.convert("RGB")
    kwargs: dict = {"quality": quality, "speed": speed, "subsampling": "4:4:4", "range": "full"}
    if exif:
        kwargs["exif"] = exif
    image.save(out, "AVIF", **kwargs)
