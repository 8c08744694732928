"""JPEG XL for the local save, through ``pillow-jxl-plugin`` (the Pillow plugin ComfyUI packs such as Save Image
Extended use; libjxl inside): lossless, 8 bits per sample, gray, RGB or RGBA, the metadata in an ``Exif`` box
holding the same TIFF as WebP (IFD0 0x0110 ``prompt:``, 0x010F ``workflow:``), as the daemon writes it
(PROTOCOL.md section 12.6). The daemon's encoder is a pure-Rust port of libjxl's fast-lossless mode, so the plugin
runs at effort 1, libjxl's own fast-lossless mode: files of the same size class and speed as the daemon's (its
default effort 7 makes files about half the size but takes ~25 times longer, seconds per megapixel on the prompt
thread). The decoded samples are identical.

Without the plugin, or for 16 bits (Pillow has no 16-bit colour mode, so the plugin cannot take one), the image is
saved as PNG (8 or 16 bits) and the image's notes say so: never a lost image."""

from __future__ import annotations

from typing import BinaryIO

from PIL import Image

JPEG_EXIF_PREFIX = b"Exif\0\0"

MISSING_NOTE = (
    "JPEG XL needs the pillow-jxl-plugin package (pip install pillow-jxl-plugin) for local saves; saved as PNG instead"
)
SIXTEEN_BIT_NOTE = (
    "16-bit JPEG XL is daemon-only (pillow-jxl-plugin writes 8-bit colour only); saved as a 16-bit PNG instead"
)
# The ISO/IEC 18181-2 Exif box starts with the offset of the TIFF header within it: 0, the TIFF follows.
EXIF_BOX_PREFIX = b"\0\0\0\0"
# libjxl's fast-lossless mode, the design the daemon's encoder ports (see the module docs).
EFFORT = 1


def available() -> bool:
    """Whether ``pillow_jxl`` is importable (importing it registers the JXL format with Pillow)."""
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return False
    return True


def write_jxl(out: BinaryIO, image: Image.Image, exif: Image.Exif | None) -> None:
    """A lossless JPEG XL of the 8-bit ``image``; ``exif`` goes into an ``Exif`` box."""
    import pillow_jxl  # noqa: F401 - registers "JXL"

    kwargs: dict = {"lossless": True, "effort": EFFORT}
    if exif is not None:
        tiff = exif.tobytes()
        tiff = tiff[len(JPEG_EXIF_PREFIX) :] if tiff.startswith(JPEG_EXIF_PREFIX) else tiff
        # The plugin stores the bytes it is given as the box's payload; its reader accepts the offset form.
        kwargs["exif"] = EXIF_BOX_PREFIX + tiff
    image.save(out, "JXL", **kwargs)
