# One place for the commands CI and developers run. `make test` is the README's test command.
PYTHON ?= python3
CARGO ?= cargo

.PHONY: serve test test-rust test-python test-wheel python-deps lint bench wheel

## Run the daemon with its embedded defaults.
serve:
	$(CARGO) run --release -- serve

## Every test: Rust (unit + integration) and Python (node pack), except the wheel's (`make test-wheel`, its own CI
## step: a release build). Installs the Python test dependencies first.
test: python-deps test-rust test-python

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
