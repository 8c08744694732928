"""The cold build cost of one dependency, in CPU-minutes (docs/ARCHITECTURE.md's dependency table).

    python3 scripts/bench_build_cost.py 'exr = { version = "1.74", default-features = false }' [--jobs 1]

Makes a scratch crate in a temp dir that depends only on that crate (the line as in Cargo.toml, with this
repository's Cargo.lock, so the versions are ours), builds it with `cargo build --release` into a fresh
CARGO_TARGET_DIR, and reports the user + system CPU time of the build (all rustc, build-script and linker
processes: getrusage of the children), which does not depend on how busy the machine is the way wall-clock time
does. Then `cargo clean -p NAME` and a second build give the crate's own share (without its dependencies, some of
which the daemon has anyway). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_build(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(CPU seconds of the children, wall seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dependency", help="the Cargo.toml line, e.g. 'exr = { version = \"1.74\" }'")
    parser.add_argument("--jobs", default="1", help="CARGO_BUILD_JOBS (default 1: the machine is shared)")
    args = parser.parse_args()
    name = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", args.dependency)
    if not name:
        parser.error("the dependency line must start with NAME =")
    crate = name.group(1)
    work = Path(tempfile.mkdtemp(prefix=f"luna-build-cost-{crate}-"))
    try:
        (work / "src").mkdir()
        (work / "src" / "lib.rs").write_text("")
        (work / "Cargo.toml").write_text(
            f'[package]\nname = "scratch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n{args.dependency}\n'
        )
        shutil.copy(ROOT / "Cargo.lock", work / "Cargo.lock")
        cargo = os.environ.get("CARGO", "cargo")
        env = dict(os.environ, CARGO_TARGET_DIR=str(work / "target"), CARGO_BUILD_JOBS=args.jobs)
        build = [cargo, "build", "--release", "--quiet"]
        cold_cpu, cold_wall = timed_build(build, work, env)
        units = len(list((work / "target" / "release" / "deps").glob("*.rlib")))
        subprocess.run([cargo, "clean", "--release", "--quiet", "-p", crate], cwd=work, env=env, check=True)
        own_cpu, _ = timed_build(build, work, env)
        tree = subprocess.run(
            [cargo, "tree", "--edges", "normal", "--prefix", "none", "--quiet"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "dependency": args.dependency.strip(),
        "jobs": args.jobs,
        "cold_cpu_min": cold_cpu / 60,
        "cold_wall_min": cold_wall / 60,
        "crate_alone_cpu_min": own_cpu / 60,
        "rlibs": units,
        "crates": sorted({line.split(" (")[0] for line in tree if line and not line.startswith("scratch ")}),
        "load_end": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
