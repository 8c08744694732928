"""The PIL side of `make bench` (see docs/BENCHMARKS.md).

Loads the test images that `benches/save.rs` wrote (same pixels as the Rust side), then measures what ComfyUI
does today with Pillow: PNG at compress_level 0..9, JPEG and WebP, to memory and to a file, and an end-to-end
"generate then save" loop with blocking saves. Writes a JSON file; it passes or fails nothing.

    python3 scripts/bench_pil.py --images DIR --out DIR/pil.json [--quick] [--only png,codecs,e2e]
    python3 scripts/bench_pil.py --serve   # the corpus section of benches/save.rs: one request per stdin line

In `--serve` mode each stdin line is a JSON request {"file": NPY, "level": N, "reps": R}; the answer on stdout
is {"cpu_ms": median thread CPU time of encoding the image as PNG into memory, "bytes": size}, so that the Rust
side can time Pillow and itself interleaved, image by image. A request with a "case" instead of a "level" is one
of the formats section's (scripts/bench_formats.py: AVIF, JPEG XL, 16-bit PNG, EXR, JPEG, WebP), answered by
`bench_formats.measure`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

GENERATE_MS = 200.0


def reps_for(size: int, quick: bool) -> int:
    if quick:
        return 1 if size > 1024 else 3
    return 3 if size > 1024 else 7


def save_kwargs(codec: str) -> tuple[str, dict]:
    """Pillow format and options for each codec case (PIL defaults otherwise: JPEG 4:2:0, WebP method 4)."""
    return {
        "jpeg_q90": ("JPEG", {"quality": 90}),
        "jpeg_q95": ("JPEG", {"quality": 95}),
        "webp_q90": ("WEBP", {"quality": 90}),
        "webp_lossless": ("WEBP", {"lossless": True}),
    }[codec]


def more(samples_ms: list[float], min_reps: int) -> bool:
    """Repeat at least `min_reps` times, and fast operations until ~0.5 s was measured (at most 41 times)."""
    return len(samples_ms) < min_reps or (len(samples_ms) < 41 and sum(samples_ms) < 500.0)


def measure(image: Image.Image, fmt: str, kwargs: dict, reps: int, path: Path) -> dict:
    """Median encode time into memory and median time of `Image.save(path)` (what ComfyUI's SaveImage does)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)  # warm-up
    encode_ms, save_ms, save_cpu_ms = [], [], []
    size = 0
    while more(encode_ms, reps):
        buf = io.BytesIO()
        t = time.perf_counter()
        image.save(buf, format=fmt, **kwargs)
        encode_ms.append((time.perf_counter() - t) * 1e3)
        size = buf.tell()
    while more(save_ms, reps):
        c = time.thread_time()
        t = time.perf_counter()
        image.save(path, format=fmt, **kwargs)
        save_ms.append((time.perf_counter() - t) * 1e3)
        save_cpu_ms.append((time.thread_time() - c) * 1e3)
        path.unlink()
    return {
        "encode_ms": statistics.median(encode_ms),
        "save_ms": statistics.median(save_ms),
        "save_cpu_ms": statistics.median(save_cpu_ms),
        "bytes": size,
    }


def load_u8(images: Path, size: int) -> Image.Image:
    return Image.fromarray(np.load(images / f"image_{size}_u8.npy"))


def bench_png(images: Path, sizes: list[int], quick: bool, scratch: Path) -> list[dict]:
    rows = []
    for size in sizes:
        image = load_u8(images, size)
        for level in range(10):
            row = measure(
                image,
                "PNG",
                {"compress_level": level},
                reps_for(size, quick),
                scratch / "b.png",
            )
            row.update(size=size, level=level)
            log(f"png {size} L{level}: {row}")
            rows.append(row)
    return rows


def bench_codecs(images: Path, sizes: list[int], quick: bool, scratch: Path) -> list[dict]:
    rows = []
    for size in sizes:
        image = load_u8(images, size)
        for codec in ("jpeg_q90", "jpeg_q95", "webp_q90", "webp_lossless"):
            fmt, kwargs = save_kwargs(codec)
            row = measure(image, fmt, kwargs, reps_for(size, quick), scratch / "b.img")
            row.update(size=size, codec=codec)
            log(f"{codec} {size}: {row}")
            rows.append(row)
    return rows


def cpu_work(iters: int) -> int:
    """Fixed integer work: the simulated generation (pure Python, so it holds the GIL like a busy node would)."""
    x = 0x9E3779B9
    acc = 0
    for _ in range(iters):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        acc ^= x
    return acc


def calibrate(target_ms: float) -> int:
    iters = 200_000
    best = min(timed(lambda: cpu_work(iters)) for _ in range(5))
    return int(iters * target_ms / best)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def comfy_save(tensor: np.ndarray, path: Path, compress_level: int = 4) -> None:
    """ComfyUI's SaveImage, minus metadata: float32 [H, W, 3] in 0..1 to uint8, then Pillow PNG."""
    array = np.clip(255.0 * tensor, 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path, compress_level=compress_level)


def bench_e2e(images: Path, quick: bool, scratch: Path, batch: int = 1) -> dict:
    """`batch` images saved per simulated generation, as SaveImage saves a batch: one after the other."""
    iterations = 5 if quick else 10
    rounds = 1 if quick else (3 if batch == 1 else 2)
    tensor = np.load(images / "image_1024_f32.npy")
    gen_iters = calibrate(GENERATE_MS)
    alone, blocking = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(iterations):
            cpu_work(gen_iters)
        alone.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        for i in range(iterations):
            cpu_work(gen_iters)
            for b in range(batch):
                comfy_save(tensor, scratch / f"e2e_{i}_{b}.png")
        blocking.append((time.perf_counter() - t) * 1e3)
        for path in scratch.glob("e2e_*.png"):
            path.unlink()
    # The pieces of a blocking save, and the floor a daemon submit is compared with (the node issue uses it).
    convert_ms = statistics.median(timed(lambda: np.clip(255.0 * tensor, 0, 255).astype(np.uint8)) for _ in range(7))
    dst = np.empty_like(tensor)
    copy_ms = statistics.median(timed(lambda: np.copyto(dst, tensor)) for _ in range(15))
    out = {
        "iterations": iterations,
        "rounds": rounds,
        "batch": batch,
        "generate_alone_ms": statistics.median(alone) / iterations,
        "blocking_pil_ms": statistics.median(blocking) / iterations,
        "convert_f32_to_u8_ms": convert_ms,
        "numpy_copy_ms": copy_ms,
    }
    log(f"e2e: {out}")
    return out


def serve() -> int:
    """Answers corpus and formats requests (see the module doc) until stdin closes."""
    cached: tuple[str, Image.Image] | None = None
    for line in sys.stdin:
        request = json.loads(line)
        if "case" in request:
            import bench_formats  # the formats section only: it imports the node pack's local fallback

            print(json.dumps(bench_formats.measure(request)), flush=True)
            continue
        if cached is None or cached[0] != request["file"]:
            array = np.load(request["file"])
            if array.shape[2] == 1:  # grey: Pillow's mode L wants 2-D
                array = array[:, :, 0]
            cached = (request["file"], Image.fromarray(array))
        image = cached[1]
        samples: list[float] = []
        size = 0
        while len(samples) < request["reps"] or (len(samples) < 15 and sum(samples) < 150.0):
            buf = io.BytesIO()
            c = time.thread_time()
            image.save(buf, format="PNG", compress_level=request["level"])
            samples.append((time.thread_time() - c) * 1e3)
            size = buf.tell()
        print(
            json.dumps({"cpu_ms": statistics.median(samples), "bytes": size}),
            flush=True,
        )
    return 0


def log(message: str) -> None:
    print(f"[pil] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="answer corpus requests on stdin")
    parser.add_argument(
        "--images",
        type=Path,
        help="directory with the .npy images from Rust",
    )
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 1024x1024 only")
    parser.add_argument("--only", default="png,codecs,e2e", help="comma-separated sections")
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.images is None or args.out is None:
        parser.error("--images and --out are required (or --serve)")
    only = set(args.only.split(","))
    sizes = [1024] if args.quick else [1024, 2048]
    # Files go to the regular temp filesystem, as on the Rust side.
    scratch = Path(tempfile.mkdtemp(prefix="luna-bench-pil-"))
    started = time.perf_counter()
    try:
        results: dict = {
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "zlib": features.version("zlib"),
            "zlib_ng": features.version("zlib_ng") if "zlib_ng" in features.features else None,
            "libjpeg_turbo": features.version("libjpeg_turbo") if "libjpeg_turbo" in features.features else None,
            "webp": features.version("webp"),
            "python": sys.version.split()[0],
        }
        if "png" in only:
            results["png"] = bench_png(args.images, sizes, args.quick, scratch)
        if "codecs" in only:
            results["codecs"] = bench_codecs(args.images, sizes, args.quick, scratch)
        if "e2e" in only:
            results["e2e"] = bench_e2e(args.images, args.quick, scratch)
            results["e2e_batch4"] = bench_e2e(args.images, args.quick, scratch, batch=4)
        results["seconds"] = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=1))
    log(f"results in {args.out} ({results['seconds']:.0f} s, pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
