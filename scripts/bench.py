"""`make bench`: run the Rust and PIL benchmarks in one go and write docs/BENCHMARKS.md with SVG charts.

    python3 scripts/bench.py [--quick] [--keep DIR] [--docs docs]
    python3 scripts/bench.py --report-only docs/bench/results.json   # re-render the report from saved results

Steps: build the daemon (release), write the corpus (scripts/bench_corpus.py), run `cargo bench --bench save`
(writes the shared test images and rust.json; its corpus and formats sections time Pillow interleaved through
`scripts/bench_pil.py --serve`), run scripts/bench_pil.py on the same images (pil.json), scripts/bench_node.py
(node.json), `cargo bench --bench batch` (thumbnails and ZIP archives, batch.json) and scripts/bench_s3.py
(uploads/s against a local s3s-fs, or "skipped" without it: s3.json), merge them with a description of the
machine into docs/bench/results.json, and render docs/BENCHMARKS.md and docs/bench/*.svg from it. Every figure is
a ratio against a baseline measured in the same run; the verdicts compare them with SPEC §7's targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_report import key_figures, render, write_charts

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------------------------
# Running


def run(cmd: list[str], **kwargs) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kwargs)


def capture(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_times() -> list[int]:
    """Aggregate jiffies from /proc/stat: user nice system idle iowait irq softirq steal."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return [0] * 8


def machine() -> dict:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rustc": capture(["rustc", "--version"]),
        "commit": capture(["git", "rev-parse", "--short", "HEAD"]),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else [],
    }


def run_all(quick: bool, work: Path) -> dict:
    info = machine()
    before, started = cpu_times(), time.time()
    cargo = os.environ.get("CARGO", "cargo")
    run([cargo, "build", "--release", "--bin", "luna-daemon"])
    rust_args = [
        "--out",
        str(work),
        "--daemon-bin",
        str(ROOT / "target/release/luna-daemon"),
    ]
    if quick:
        rust_args.append("--quick")
    corpus = work / "corpus"
    corpus_args = ["--out", str(corpus), "--cache", str(ROOT / "target/bench-cache")]
    run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_corpus.py"),
            *corpus_args,
            *(["--quick"] if quick else []),
        ]
    )
    rust_args += ["--corpus", str(corpus), "--python", sys.executable]
    run([cargo, "bench", "--bench", "save", "--", *rust_args])
    pil_args = ["--images", str(work), "--out", str(work / "pil.json")]
    if quick:
        pil_args.append("--quick")
    run([sys.executable, str(ROOT / "scripts/bench_pil.py"), *pil_args])
    node_args = ["--json", str(work / "node.json"), "--runs", "10" if quick else "30"]
    run([sys.executable, str(ROOT / "scripts/bench_node.py"), *node_args])
    batch_args = ["--bench", "--json", str(work / "batch.json"), *(["--quick"] if quick else [])]
    run([cargo, "bench", "--bench", "batch", "--", *batch_args], stdout=sys.stderr)
    s3_args = ["--daemon-bin", str(ROOT / "target/release/luna-daemon"), "--json", str(work / "s3.json")]
    run([sys.executable, str(ROOT / "scripts/bench_s3.py"), *s3_args, *(["--rounds", "3"] if quick else [])])
    after = cpu_times()
    delta = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(delta) or 1
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    info["steal_pct"] = 100.0 * delta[7] / total
    info["busy_pct"] = 100.0 * (total - delta[3] - delta[4]) / total
    info["minutes"] = (time.time() - started) / 60
    return {
        "machine": info,
        "quick": quick,
        "rust": json.loads((work / "rust.json").read_text()),
        "pil": json.loads((work / "pil.json").read_text()),
        "node": json.loads((work / "node.json").read_text()),
        "batch": json.loads((work / "batch.json").read_text()),
        "s3": json.loads((work / "s3.json").read_text()),
    }


# ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write docs/BENCHMARKS.md")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (1024x1024 only, few repetitions)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="where BENCHMARKS.md and bench/ go (default: docs/, or target/bench-quick/ with --quick)",
    )
    parser.add_argument("--keep", type=Path, help="keep the raw work directory here")
    parser.add_argument("--report-only", type=Path, help="re-render from an existing results.json")
    args = parser.parse_args()
    if args.docs is None:
        args.docs = ROOT / ("target/bench-quick" if args.quick else "docs")
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        work = args.keep or Path(tempfile.mkdtemp(prefix="luna-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            results = run_all(args.quick, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    chart_dir = args.docs / "bench"
    chart_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        (chart_dir / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    history_path = chart_dir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    if not args.report_only and not results.get("quick"):
        history = [*history, key_figures(results)][-12:]
        history_path.write_text(json.dumps(history, indent=1) + "\n")
    charts = write_charts(results, chart_dir)
    (args.docs / "BENCHMARKS.md").write_text(render(results, charts, history))
    print(
        f"wrote {args.docs / 'BENCHMARKS.md'} and {len(charts)} charts in {chart_dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
