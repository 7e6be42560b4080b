# Two commands set up a fresh machine (Debian/Ubuntu, Python 3.11 for the lock):
#   make demo   install (locked), then run the main job on the embedded synthetic data
#   make test   install (locked), then run the whole test suite
# and two keep the lock honest:
#   make test-latest   the suite in a fresh venv with the newest releases pyproject's ranges allow
#   make lock          test-latest, then write its environment to requirements-lock.txt
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
LATEST := .venv-latest
SMOKE := .venv-smoke
LOWEST := .venv-lowest
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# `pytest`, not `python -m pytest`: the latter puts the repository root first on sys.path
PYTEST_ARGS := -n 2 --dist loadfile tests

.PHONY: install demo test test-latest test-lowest lock smoke gpu-check lint bench completions clean

$(STAMP): pyproject.toml setup.py $(LOCK)
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q libusb-1.0 || missing="$$missing libusb-1.0-0"; \
	for tool in zsh fish; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing (open3d needs libusb; zsh/fish check the completions)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r $(LOCK) -e ".[dev]"
	$(BIN)/python scripts/lock.py check $(LOCK) --label "$(VENV) (run make lock after changing pyproject's dependencies)"
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# A fresh venv with the newest releases the ranges allow (torch stays the local CPU wheel: PyPI's newest
# torch is a CUDA build of several GB). A failure names what differs from the lock, in one line.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c constraints-cpu.txt -e ".[dev]"
	$(LATEST)/bin/pytest $(PYTEST_ARGS) || { \
	  $(LATEST)/bin/python scripts/lock.py check $(LOCK) --label "make test-latest failed" \
	  && echo "make test-latest failed with exactly the locked versions"; exit 1; }

# A fresh venv with the lowest releases pyproject's ranges allow (constraints-lowest.txt); dependencies of
# dependencies resolve to their newest, as a user's pip would give them.
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q --upgrade pip
	$(LOWEST)/bin/pip install -q -c constraints-lowest.txt -e ".[dev]"
	$(LOWEST)/bin/pytest $(PYTEST_ARGS)

lock: test-latest
	$(LATEST)/bin/python scripts/lock.py write $(LOCK)

# Another Python (`make smoke PYTHON=python3.13`): install from pyproject's ranges (PyPI's torch: a CUDA build
# on Pythons without the local CPU wheel), the install and sparse-backend tests, then every quickstart (demo).
smoke:
	rm -rf $(SMOKE)
	$(PYTHON) -m venv $(SMOKE)
	$(SMOKE)/bin/pip install -q --upgrade pip
	$(SMOKE)/bin/pip install -q -e ".[dev,spconv]"
	$(SMOKE)/bin/pytest -n 2 tests/test_install.py tests/test_sparse_backends.py tests/test_spvcnn.py tests/test_cli.py
	PATH="$(abspath $(SMOKE))/bin:$$PATH" DEMO_OUT=$(SMOKE)/demo-out bash scripts/demo.sh

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/ops.py
	$(BIN)/python bench/train_step.py

# On a bare CUDA machine (see scripts/gpu_check.py): `bash scripts/gpu-wheels.sh` on a CPU machine first,
# then this; it uses the machine's own python, not a venv.
gpu-check:
	$(PYTHON) scripts/gpu_check.py --out gpu-check.json

completions: install
	$(BIN)/python -m pc3d.cli.completions completions

clean:
	rm -rf $(VENV) $(LATEST) $(LOWEST) $(SMOKE) demo-out .pytest_cache
