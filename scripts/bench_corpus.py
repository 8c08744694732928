"""The PNG benchmark corpus of `make bench` (see docs/BENCHMARKS.md): real content in image classes.

    python3 scripts/bench_corpus.py --out DIR [--cache DIR] [--quick]

Writes `DIR/<name>.npy` (uint8, HxWxC) and `DIR/manifest.json` (name, class, file, width, height, channels), and
for the formats section (AVIF, JPEG XL, 16-bit PNG, EXR... against Pillow: a few images, each encoded many ways)
`DIR/formats.json` (name, class, file): some of the photos, and one upscaled in float32 (`DIR/<name>_f32.npy`),
since the 16-bit and float formats keep what 8 bits drop.
Photographs nobody here generated come from scikit-image's bundled sample data: the wheel of a pinned version is
fetched with `pip download` into the cache (not committed) and read as a zip file, so nothing of scikit-image is
installed or imported. The other classes are made here from fixed seeds: flat and near-flat frames (ComfyUI's
EmptyImage), ImageAddNoise-style heavy noise, smooth gradients, transparency. The benchmark's generated image
(`luna_daemon::synthetic`) is added by benches/save.rs as its own class.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE = "scikit-image==0.26.0"
# (name in skimage/data, class). Colour photographs, grey photographs and scans, RGBA with transparency.
SAMPLES = [
    ("astronaut.png", "photo"),
    ("chelsea.png", "photo"),
    ("coffee.png", "photo"),
    ("motorcycle_left.png", "photo"),
    ("rocket.jpg", "photo"),
    ("ihc.png", "photo"),
    ("hubble_deep_field.jpg", "photo"),
    ("retina.jpg", "photo"),
    ("camera.png", "grey"),
    ("moon.png", "grey"),
    ("grass.png", "grey"),
    ("gravel.png", "grey"),
    ("brick.png", "grey"),
    ("coins.png", "grey"),
    ("page.png", "grey"),
    ("text.png", "grey"),
    ("logo.png", "rgba"),
    ("horse.png", "rgba"),
]
QUICK = {"astronaut.png", "coffee.png", "camera.png", "logo.png"}
# The formats section's real content (the generated image is added by benches/save/formats.rs).
FORMATS = ["astronaut", "coffee", "chelsea"]
FORMATS_QUICK = ["astronaut"]


def fetch_wheel(cache: Path) -> Path:
    """The scikit-image wheel for this Python, downloaded once into `cache` (no dependencies, nothing installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scikit_image-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        subprocess.run([*cmd, "--dest", str(cache), SKIMAGE], check=True)
        wheels = sorted(cache.glob("scikit_image-*.whl"))
    return wheels[-1]


def samples(wheel: Path, quick: bool) -> list[tuple[str, str, np.ndarray]]:
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name, cls in SAMPLES:
            if quick and name not in QUICK:
                continue
            image = Image.open(io.BytesIO(z.read(f"skimage/data/{name}")))
            image = image.convert({"grey": "L", "rgba": "RGBA"}.get(cls, "RGB"))
            out.append((name.rsplit(".", 1)[0], cls, np.asarray(image)))
    return out


def upscaled(photo: np.ndarray, size: int) -> np.ndarray:
    """What an upscaler node hands SaveImage: a photo resized (Lanczos) to `size` x `size`."""
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.LANCZOS))


def cutout(photo: np.ndarray) -> np.ndarray:
    """A subject cut out of a photo: soft-edged disc of alpha, fully transparent pixels black (as a matte gives)."""
    h, w = photo.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(x - w / 2, y - h / 2) / (min(h, w) * 0.4)
    alpha = np.clip((1.0 - r) * 8.0, 0.0, 1.0)
    rgb = (photo.astype(np.float32) * alpha[..., None]).round().astype(np.uint8)
    return np.dstack([rgb, (alpha * 255).round().astype(np.uint8)])


def to_u8(x: np.ndarray) -> np.ndarray:
    """ComfyUI's float [0, 1] to uint8 (SaveImage: clip(255 * x))."""
    return np.clip(255.0 * x, 0, 255).astype(np.uint8)


def flat(size: int, colour: tuple[float, float, float]) -> np.ndarray:
    """EmptyImage: a solid colour."""
    return to_u8(np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3)))


def near_flat(size: int, seed: int) -> np.ndarray:
    """A decoded empty latent: one colour with sub-level noise, so that values wander by one step here and there."""
    rng = np.random.default_rng(seed)
    base = np.asarray([0.45, 0.47, 0.50], np.float32)
    return to_u8(base + rng.normal(0.0, 0.6 / 255.0, (size, size, 3)).astype(np.float32))


def add_noise(image: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """ComfyUI's ImageAddNoise: clip(image + strength * randn, 0, 1)."""
    rng = np.random.default_rng(seed)
    x = image.astype(np.float32) / 255.0
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    return to_u8(np.clip(x + strength * noise, 0.0, 1.0))


def gradient(size: int, kind: str) -> np.ndarray:
    """Smooth 8-bit gradients: linear per channel, or radial."""
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(t, t, indexing="ij")
    if kind == "linear":
        rgb = np.dstack([x, y, 1.0 - 0.5 * (x + y)])
    else:
        r = np.clip(np.hypot(x - 0.5, y - 0.5) * 1.4, 0.0, 1.0)
        rgb = np.dstack([1.0 - r, 0.3 + 0.5 * r, 0.8 * (1.0 - r) ** 2])
    return to_u8(rgb)


def generated_classes(photos: dict[str, np.ndarray], quick: bool) -> list[tuple[str, str, np.ndarray]]:
    grey_1024 = flat(1024, (0.5, 0.5, 0.5))
    out = [
        ("flat_black_1024", "flat", flat(1024, (0.0, 0.0, 0.0))),
        ("flat_colour_1024", "flat", flat(1024, (0.25, 0.55, 0.8))),
        ("near_flat_1024", "flat", near_flat(1024, 3)),
        ("noise_grey_1024", "noise", add_noise(grey_1024, 0.5, 5)),
        ("gradient_linear_1024", "gradient", gradient(1024, "linear")),
        ("cutout_astronaut", "rgba", cutout(photos["astronaut"])),
    ]
    if quick:
        return out
    return [
        *out,
        ("flat_colour_512", "flat", flat(512, (0.9, 0.9, 0.85))),
        ("flat_black_2048", "flat", flat(2048, (0.0, 0.0, 0.0))),
        ("near_flat_2048", "flat", near_flat(2048, 4)),
        ("noise_photo_512", "noise", add_noise(photos["astronaut"], 0.5, 6)),
        ("noise_grey_2048", "noise", add_noise(flat(2048, (0.5, 0.5, 0.5)), 0.5, 7)),
        ("gradient_radial_1024", "gradient", gradient(1024, "radial")),
        ("gradient_linear_2048", "gradient", gradient(2048, "linear")),
        ("gradient_radial_512", "gradient", gradient(512, "radial")),
        ("astronaut_upscaled_2048", "photo", upscaled(photos["astronaut"], 2048)),
        ("coffee_upscaled_1024", "photo", upscaled(photos["coffee"], 1024)),
    ]


def upscaled_f32(photo: np.ndarray, factor: int) -> np.ndarray:
    """What an upscaler model hands SaveImage before any 8-bit conversion: the photo resized (Lanczos) in float32,
    clipped to [0, 1], so its samples fall between the 8-bit steps."""
    x = photo.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(x[:, :, c]), mode="F").resize((w * factor, h * factor), Image.LANCZOS)
        )
        for c in range(x.shape[2])
    ]
    return np.clip(np.dstack(planes), 0.0, 1.0).astype(np.float32)


def write_formats(out: Path, entries: list[dict], photos: dict[str, np.ndarray], quick: bool) -> list[dict]:
    """formats.json: the photos of FORMATS (as in the corpus) and the first of them upscaled 2x in float32."""
    by_name = {e["name"]: e for e in entries}
    names = FORMATS_QUICK if quick else FORMATS
    chosen = [{k: by_name[n][k] for k in ("name", "class", "file")} for n in names]
    if not quick:
        name = f"{names[1]}_upscaled_f32"
        np.save(out / f"{name}.npy", upscaled_f32(photos[names[1]], 2))
        chosen.append({"name": name, "class": "photo (float32)", "file": f"{name}.npy"})
    (out / "formats.json").write_text(json.dumps(chosen, indent=1))
    return chosen


def write_corpus(out: Path, cache: Path, quick: bool) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    real = samples(fetch_wheel(cache), quick)
    photos = {name: a for name, cls, a in real}
    entries = []
    for name, cls, pixels in [*real, *generated_classes(photos, quick)]:
        array = np.ascontiguousarray(pixels[..., None] if pixels.ndim == 2 else pixels, dtype=np.uint8)
        file = f"{name}.npy"
        np.save(out / file, array)
        h, w, c = array.shape
        entries.append(
            {
                "name": name,
                "class": cls,
                "file": file,
                "width": w,
                "height": h,
                "channels": c,
            }
        )
    (out / "manifest.json").write_text(json.dumps(entries, indent=1))
    write_formats(out, entries, photos, quick)
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for the .npy files and manifest.json",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("target/bench-cache"),
        help="where the wheel is kept",
    )
    parser.add_argument("--quick", action="store_true", help="a few images per class")
    args = parser.parse_args()
    entries = write_corpus(args.out, args.cache, args.quick)
    pixels = sum(e["width"] * e["height"] for e in entries)
    print(
        f"[corpus] {len(entries)} images, {pixels / 1e6:.1f} Mpixel in {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
