# Two commands for a fresh machine:
#   make demo   build the embedded default (digits) for a Raspberry Pi 4, 2-bit weights
#   make test   run the test suite
# Both create or update the virtual environment in .venv on first use and install the system
# packages the default targets and the tests need (aarch64 cross compiler, Fashion-MNIST).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CROSS_CXX := aarch64-linux-gnu-g++
CROSS_PKG := g++-aarch64-linux-gnu
FASHION_DIR := /usr/share/datasets/fashion-mnist
FASHION_PKG := dataset-fashion-mnist

.PHONY: demo test test-slow test-pi pi-deps lint system-deps test-deps clean

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "error: apprentice-hw needs Python 3.11; run 'make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian packages: the aarch64 cross compiler (arm targets) and the real Fashion-MNIST
# (benchmark and its loader test). Installed when missing; without root or sudo, one line says how.
system-deps:
	@missing=""; \
	command -v $(CROSS_CXX) >/dev/null 2>&1 || missing="$$missing $(CROSS_PKG)"; \
	[ -d $(FASHION_DIR) ] || missing="$$missing $(FASHION_PKG)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "error: missing system packages; run 'sudo apt-get install$$missing' and rerun"; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/apprentice-hw build --target arm-a72 --bits 2 --force

test: $(STAMP) system-deps test-deps
	$(BIN)/python -m pytest

# Debian's chromium renders report.html in a test (a screenshot and the page's DOM); where it
# cannot be installed (no root, no sudo) that test skips and says so.
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "note: no chromium and no root to install it; the report page test will skip"; exit 0; fi; \
	  echo "installing chromium (for the report page test)"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "note: chromium did not install; the report page test will skip"; }

test-slow: $(STAMP) system-deps
	$(BIN)/python -m pytest -m slow

# The emulated Raspberry Pi 4 (qemu-user + Debian arm64 + the aarch64 TVM runtime) and the slow
# tests that deploy to it. Setting it up needs root once; it lives in ~/.cache/apprentice-hw.
pi-deps:
	@missing=""; \
	command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$$missing qemu-user-static"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test-pi: $(STAMP) system-deps pi-deps
	$(BIN)/apprentice-hw emulated-pi --setup-only
	APPRENTICE_HW_REQUIRE_PI=1 $(BIN)/python -m pytest -m slow tests/test_emulated_pi.py

lint: $(STAMP)
	$(BIN)/ruff check apprentice_hw tests benchmarks
	$(BIN)/ruff format --check apprentice_hw tests benchmarks

clean:
	rm -rf build .pytest_cache
