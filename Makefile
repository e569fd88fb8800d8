# Two commands for a fresh machine:
#   make demo   build the embedded default (digits) for a Raspberry Pi 4, 2-bit weights
#   make test   run the test suite
# Both create or update the virtual environment in .venv on first use and install the system
# packages the default targets need (the aarch64 cross compiler).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CROSS_CXX := aarch64-linux-gnu-g++
CROSS_PKG := g++-aarch64-linux-gnu

.PHONY: demo test lint system-deps clean

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "error: apprentice-hw needs Python 3.11; run 'make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@if ! command -v $(CROSS_CXX) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(CROSS_PKG) (aarch64 cross compiler for the arm-a72 target)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CROSS_PKG) >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CROSS_PKG) >/dev/null; \
	  else \
	    echo "error: the arm targets need $(CROSS_CXX); install it with 'sudo apt-get install $(CROSS_PKG)' and rerun"; \
	    exit 1; \
	  fi; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/apprentice-hw build --target arm-a72 --bits 2 --force

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check apprentice_hw tests benchmarks
	$(BIN)/ruff format --check apprentice_hw tests benchmarks

clean:
	rm -rf build .pytest_cache
