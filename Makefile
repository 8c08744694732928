# One place for the commands CI and developers run. `make test` is the README's test command.
PYTHON ?= python3
CARGO ?= cargo

.PHONY: serve test s3-server test-rust test-python test-wheel test-root test-comfyui python-deps lint bench wheel test-windows lint-windows wheel-windows ci-windows

## Run the daemon with its embedded defaults.
serve:
	$(CARGO) run --release -- serve

## Every test: Rust (unit + integration) and Python (node pack), except the wheel's (`make test-wheel`, its own CI
## step: a release build). Installs the Python test dependencies and the S3 test server first.
test: python-deps s3-server test-rust test-python

## s3s-fs: the S3-compatible server (file-system backed, checks SigV4 and If-None-Match) that the object-storage
## tests start themselves (tests/it/s3.rs, comfyui/tests/test_s3.py). Built from crates.io once per machine
## (~4 CPU-minutes), skipped when it is on PATH.
S3S_FS_VERSION = 0.14.1
s3-server:
	@command -v s3s-fs >/dev/null 2>&1 || $(CARGO) install --locked --quiet s3s-fs --version $(S3S_FS_VERSION) --features binary

test-rust:
	$(CARGO) test --all-targets

# The Python tests drive the same debug binary the Rust integration tests use. The wheel's tests (a release build)
# are not part of this: `make test-wheel` runs them.
test-python:
	$(CARGO) build --bin luna-daemon
	LUNA_DAEMON_BIN=$(CURDIR)/target/debug/luna-daemon $(PYTHON) -m pytest -q -m "not wheel" comfyui/tests

## The wheel, built once (maturin, a release build into target/), installed into a fresh venv and run: its own CI step.
WHEEL_TEST_DIR = target/wheel-test
test-wheel: python-deps
	rm -rf $(WHEEL_TEST_DIR)
	$(PYTHON) -m maturin build --release --out $(WHEEL_TEST_DIR)
	LUNA_DAEMON_WHEEL_DIR=$(CURDIR)/$(WHEEL_TEST_DIR) $(PYTHON) -m pytest -q -m wheel comfyui/tests/test_wheel.py

## The node inside the real ComfyUI 0.3.64 (headless, CPU) over its HTTP API, and its web frontend in headless
## Chromium. ComfyUI is installed into a venv cached outside the repository ($HOME/.cache/luna-daemon-comfyui, keyed
## by the lock file), so only the first run downloads it (see comfyui/tests/real/prepare_comfyui.sh).
test-comfyui:
	$(CARGO) build --bin luna-daemon
	cd comfyui/tests/browser && npm ci --no-audit --no-fund --silent
	@set -e; paths="$$(comfyui/tests/real/prepare_comfyui.sh)"; \
	export LUNA_COMFYUI_DIR="$$(echo "$$paths" | sed -n 1p)" LUNA_COMFYUI_PYTHON="$$(echo "$$paths" | sed -n 2p)"; \
	LUNA_DAEMON_BIN=$(CURDIR)/target/debug/luna-daemon $(PYTHON) -m pytest -q -p no:cacheprovider comfyui/tests/real

python-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r comfyui/requirements-dev.txt

## The Python wheel carrying the daemon binary (pip install target/wheels/luna_daemon-*.whl); see docs/SERVICES.md.
wheel:
	$(PYTHON) -m maturin build --release

## Benchmarks against PIL and its plugins and the physical floor, every format, the batch features (release build,
## ~25 min on 2 shared cores; not part of test or CI). Writes docs/BENCHMARKS.md and docs/bench/.
## `python3 scripts/bench.py --quick` is a smoke run of every section (report in target/bench-quick/).
bench:
	CARGO=$(CARGO) $(PYTHON) scripts/bench.py

## Formatting and lints, exactly as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet
	$(PYTHON) -m ruff check comfyui python tests scripts
	$(PYTHON) -m ruff format --check comfyui python tests scripts

## Integration tests that need root (tmpfs mounts, a client of another user): `#[ignore]`d in `make test`, run
## here explicitly. CI runs as root.
test-root:
	$(CARGO) test --test it -- --ignored

## Windows, cross-built on Debian (x86_64-pc-windows-gnu) and run under Wine; see docs/WINDOWS.md. Installs its
## toolchain from apt into $${LUNA_WINDOWS_CACHE:-~/.cache/luna-daemon-windows} (first run ~25 min on 2 cores).
## Every test runs in its own Wine process with a timeout (LUNA_WINDOWS_TEST_TIMEOUT, default 120 s).
test-windows:
	scripts/windows/test.sh $(WINDOWS_TEST_ARGS)

## clippy -D warnings for the Windows target.
lint-windows:
	scripts/windows/lint.sh

## The win_amd64 wheel carrying luna-daemon.exe, and its binary checked under Wine (serve, submit, stop).
wheel-windows:
	scripts/windows/wheel.sh

## What CI runs for Windows (gating in .ci/run): the tests under Wine, clippy, and the wheel built from the debug
## profile (it reuses the tests' build, where the release wheel would be a second cold build of std and every
## dependency) with its luna-daemon.exe smoke-tested under Wine. `make wheel-windows` builds the release wheel.
ci-windows: test-windows lint-windows
	LUNA_WINDOWS_WHEEL_PROFILE=dev scripts/windows/wheel.sh
