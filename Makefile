# Two commands set up a fresh machine (Debian/Ubuntu, Python >= 3.10):
#   make demo   install, then run the main job on the embedded synthetic data
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint bench completions clean

$(STAMP): pyproject.toml setup.py constraints-cpu.txt
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q libusb-1.0 || missing="$$missing libusb-1.0-0"; \
	for tool in zsh fish; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing (open3d needs libusb; zsh/fish check the completions)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-cpu.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/ops.py
	$(BIN)/python bench/train_step.py

completions: install
	$(BIN)/python -m pc3d.cli.completions completions

clean:
	rm -rf $(VENV) demo-out .pytest_cache
