"""The Pillow side of the formats section of `make bench` (benches/save/formats.rs; see docs/BENCHMARKS.md).

One case per format and setting, by the name the Rust side uses: what a ComfyUI user without the daemon gets for
that format, at the daemon's settings. 8-bit formats go through Pillow (AVIF: Pillow's own plugin, libavif; JPEG
XL: pillow-jxl-plugin, libjxl), 16-bit PNG and EXR through the node's local fallback (numpy + zlib, the OpenEXR
package), which is what Pillow-based savers have for them. Encoders that can use threads are held to one, as the
daemon's are (one encode per worker thread), and CPU time is taken for the whole process, so a helper thread of a
plugin would still be counted.

`measure(request)` answers one request of `scripts/bench_pil.py --serve`: the median process CPU time and the size
of encoding the image into memory (EXR: into a file on tmpfs, since the OpenEXR package writes to a path), or why
the case is not available here (a missing plugin), never an exception for that.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "comfyui"))

from luna_multi_saver import deep_formats
from luna_multi_saver.pixels import to_uint8

# An encode: (the image as loaded, uint8 or float32 [H, W, C]; its Pillow image) -> encoded bytes.
Encode = Callable[[np.ndarray, Image.Image], int]


def pillow(fmt: str, **kwargs) -> Encode:
    def encode(_array: np.ndarray, image: Image.Image) -> int:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kwargs)
        return buf.tell()

    return encode


def png16(level: int) -> Encode:
    def encode(array: np.ndarray, _image: Image.Image) -> int:
        buf = io.BytesIO()
        deep_formats.write_png16(buf, array, level, [])
        return buf.tell()

    return encode


SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def exr(half: bool) -> Encode:
    def encode(array: np.ndarray, _image: Image.Image) -> int:
        path = SCRATCH / f"luna-bench-{os.getpid()}.exr"
        try:
            deep_formats.write_exr(str(path), array, half, "srgb", [])
            return path.stat().st_size
        finally:
            path.unlink(missing_ok=True)

    return encode


def avif_missing() -> str | None:
    return None if features.check("avif") else f"this Pillow ({Image.__version__}) was built without AVIF"


def avif_impl() -> str:
    from PIL import _avif  # Pillow's own binding: which AV1 encoder libavif uses

    return f"Pillow {Image.__version__} AVIF (libavif {features.version('avif')}; {_avif.codec_versions()})"


def jxl_missing() -> str | None:
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
    return None


def jxl_impl() -> str:
    from importlib.metadata import version

    return f"pillow-jxl-plugin {version('pillow-jxl-plugin')} (libjxl)"


def exr_missing() -> str | None:
    return None if deep_formats.exr_available() else "the OpenEXR package is not installed (pip install openexr)"


def exr_impl() -> str:
    import OpenEXR

    return f"OpenEXR {getattr(OpenEXR, '__version__', '?')} (Python package), ZIP compression"


def always() -> str | None:
    return None


def pillow_impl() -> str:
    return f"Pillow {Image.__version__}"


# name -> (what it is, why it may be missing (None: available), what implements it, the encode). The names and the
# settings are the Rust side's (benches/save/formats.rs CASES): change both together.
CASES: dict[str, tuple[Callable[[], str | None], Callable[[], str], Encode]] = {
    "jpeg_q90": (always, pillow_impl, pillow("JPEG", quality=90)),
    "webp_q90": (always, pillow_impl, pillow("WEBP", quality=90)),
    "webp_lossless": (always, pillow_impl, pillow("WEBP", lossless=True)),
    "png16_l4": (always, lambda: f"numpy {np.__version__} + zlib (the local fallback)", png16(4)),
    "exr32": (exr_missing, exr_impl, exr(half=False)),
    "exr16": (exr_missing, exr_impl, exr(half=True)),
    # libavif at Pillow's defaults (quality 75, speed 6, 4:2:0), one thread.
    "avif_q75_s6": (avif_missing, avif_impl, pillow("AVIF", quality=75, speed=6, max_threads=1)),
    "jxl_lossless": (jxl_missing, jxl_impl, pillow("JXL", lossless=True, effort=7, num_threads=1)),
    "jxl_q90": (jxl_missing, jxl_impl, pillow("JXL", quality=90, effort=7, num_threads=1)),
}

_loaded: dict[str, tuple[np.ndarray, Image.Image]] = {}


def load(file: str) -> tuple[np.ndarray, Image.Image]:
    """The image as stored (uint8 or float32 [H, W, C]) and its 8-bit Pillow image (ComfyUI's conversion)."""
    if file not in _loaded:
        array = np.load(file)
        u8 = to_uint8(array)
        _loaded.clear()
        _loaded[file] = (array, Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8))
    return _loaded[file]


def measure(request: dict) -> dict:
    """{"file": NPY, "case": NAME, "reps": R} -> {"cpu_ms", "bytes", "impl"} or {"unavailable": why}."""
    case = CASES.get(request["case"])
    if case is None:
        return {"unavailable": f"no Pillow-side case {request['case']!r} in scripts/bench_formats.py"}
    missing, impl, encode = case
    why = missing()
    if why:
        return {"unavailable": why}
    array, image = load(request["file"])
    size = encode(array, image)  # warm-up
    samples: list[float] = []
    while len(samples) < request["reps"] or (len(samples) < 15 and sum(samples) < 150.0):
        c = time.process_time()
        size = encode(array, image)
        samples.append((time.process_time() - c) * 1e3)
    return {"cpu_ms": statistics.median(samples), "bytes": size, "impl": impl()}


def versions() -> dict:
    """What each case runs on here, for the report (None where not available)."""
    return {name: (None if missing() else impl()) for name, (missing, impl, _) in CASES.items()}


if __name__ == "__main__":
    print(versions())
