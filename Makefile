# One place for the commands CI and developers run. `make test` is the README's test command.
PYTHON ?= python3
CARGO ?= cargo

.PHONY: serve test test-rust test-python test-root test-comfyui python-deps lint bench wheel

## Run the daemon with its embedded defaults.
serve:
	$(CARGO) run --release -- serve

## Every test: Rust (unit + integration) and Python (node pack). Installs the Python test dependencies first.
test: python-deps test-rust test-python

test-rust:
	$(CARGO) test --all-targets

# The Python tests drive the same debug binary the Rust integration tests use; test_wheel.py also builds the wheel
# (maturin, a release build into target/) and installs it into a fresh venv.
test-python:
	$(CARGO) build --bin luna-daemon
	LUNA_DAEMON_BIN=$(CURDIR)/target/debug/luna-daemon $(PYTHON) -m pytest -q comfyui/tests

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

## Benchmarks against PIL and the physical floor (release build, ~5 min on 2 cores; not part of test or CI).
## Writes docs/BENCHMARKS.md and docs/bench/. `python3 scripts/bench.py --quick` is a ~1 min smoke run (report in target/bench-quick/).
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
