# `make run` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/desktop-proxy

serve: $(STAMP)
	$(BIN)/desktop-proxy serve

test: $(STAMP)
	$(BIN)/ruff check desktop_proxy tests bench
	$(BIN)/mypy
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check desktop_proxy tests bench
	$(BIN)/ruff format --check desktop_proxy tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

# Installers (installers/README.md): build the PyInstaller bundle, smoke-test it, package it for
# this OS. Slow, so not part of `make test`. Windows: see installers/README.md (Inno Setup).
.PHONY: dist
$(VENV)/.installed-build: $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[build]'
	touch $@

dist: $(VENV)/.installed-build
	$(BIN)/pyinstaller --noconfirm --clean build.spec
	$(BIN)/python installers/smoke_test.py dist
	case "$$(uname -s)" in \
		Darwin) bash installers/macos/make_dmg.sh ;; \
		Linux) bash installers/linux/make_tarball.sh && bash installers/linux/make_appimage.sh ;; \
		*) echo "Package on Windows with: iscc installers/windows/desktop_proxy.iss" ;; \
	esac
