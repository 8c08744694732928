"""Uploads per second to S3-compatible object storage against files per second to a local directory, measured
side by side in one run with the same daemon, images and settings (issue 16: "uploads per second against the
local server").

    python3 scripts/bench_s3.py --daemon-bin target/release/luna-daemon [--images N] [--size WxH] [--json OUT]

Starts `s3s-fs` (the S3 server the tests use; `make s3-server` installs it, and without it this writes a
"skipped" result and exits 0) on a loopback port with its data in a temp dir, and one daemon configured for it.
Each round submits one job of N images (one PNG slot, ComfyUI's level 4) to `<tmp>/out` and then the same to
`s3://bench/<round>`, and times each from the submit to the job's `finished` (polling status). Reported: the
median images per second of each target and their ratio. The server runs on the same 2 cores as the daemon, so
this is the cost of the daemon's upload path plus a local server's, not of a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "comfyui"))

from luna_multi_saver import client  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("s3s-fs did not start") from None
            time.sleep(0.01)


def images(count: int, width: int, height: int) -> np.ndarray:
    """Smooth gradients with mild noise (compresses like a render, not like pure noise)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1)
    out = np.empty((count, height, width, 3), dtype=np.float32)
    for i in range(count):
        out[i] = np.clip(base * (0.5 + 0.5 * i / count) + rng.normal(0, 0.02, base.shape), 0, 1)
    return out


def timed_job(c: client.Client, root: str, batch: np.ndarray) -> float:
    started = time.perf_counter()
    job = c.submit(client.JobOptions(output_dir=root, filename="bench"), [client.SlotImages(batch, format="png")])
    status = c.wait(job.job_id)
    elapsed = time.perf_counter() - started
    states = {i["state"] for i in status["images"]}
    if states != {"written"}:
        raise RuntimeError(f"{root}: {status}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon-bin", type=Path, default=REPO / "target/release/luna-daemon")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    exe = os.environ.get("LUNA_S3S_FS") or shutil.which("s3s-fs")
    if exe is None:
        # `make bench` goes on without this part: the report says it was skipped and how to install the server.
        skipped = {"skipped": "s3s-fs is not installed (`make s3-server` installs it)"}
        print(f"[s3] skipped: {skipped['skipped']}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(skipped, indent=2) + "\n")
        return 0
    work = Path(tempfile.mkdtemp(prefix="luna-bench-s3-"))
    (work / "s3" / "bench").mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--access-key", "ak", "--secret-key", "sk", str(work / "s3")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon = None
    try:
        wait_listening(port, server)
        sock = str(work / "run" / "luna.sock")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="ak", AWS_SECRET_ACCESS_KEY="sk", LUNA_DAEMON_LOG="warn")
        cmd = [str(args.daemon_bin), "--socket", sock, "serve", "--spool-dir", str(work / "spool")]
        cmd += ["--state-dir", str(work / "state"), "--s3-endpoint", f"http://127.0.0.1:{port}"]
        daemon = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                c = client.Client.connect(sock, "bench-s3")
                break
            except client.ClientError:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        batch = images(args.images, width, height)
        timed_job(c, str(work / "warm"), batch[:2])  # warm segment and worker threads
        timed_job(c, "s3://bench/warm", batch[:2])  # warm connection pool and the bucket check
        files, uploads = [], []
        for r in range(args.rounds):
            files.append(args.images / timed_job(c, str(work / "out" / str(r)), batch))
            uploads.append(args.images / timed_job(c, f"s3://bench/{r}", batch))
        c.close()
        object_bytes = sum(p.stat().st_size for p in (work / "s3" / "bench" / "0").iterdir())
        result = {
            "images": args.images,
            "size": [width, height],
            "rounds": args.rounds,
            "files_per_s": statistics.median(files),
            "uploads_per_s": statistics.median(uploads),
            "ratio": statistics.median(u / f for u, f in zip(uploads, files, strict=True)),
            "mean_object_bytes": object_bytes / args.images,
            "daemon_bin": str(args.daemon_bin),
        }
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
