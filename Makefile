# difflab: `make demo`, `make test`, `make bench` set everything up in .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint bench clean debian-data gpu-check

setup: $(STAMP)

# torch==2.13.0 (CPU build, from the local wheel) goes in before anything that requires
# torch, so no dependency resolution can pull a CUDA build of several GB.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(MAKE) --no-print-directory debian-data
	touch $(STAMP)

# Debian packages the tests use: real data sets (see docs/design.md), espeak-ng and chromium (the browser
# tests of difflab report and difflab app; Playwright drives this chromium, no browser is downloaded);
# needs root, as on CI and dev machines.
DEBIAN_PKGS := dataset-fashion-mnist asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 espeak-ng chromium
debian-data:
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The main job: train a diffusion model on the embedded digits (about 4-5 minutes on 2 cores),
# sample a grid and measure FD against the test split; first, the analytic sampler demo (12 s).
demo: $(STAMP)
	$(BIN)/difflab demo --out outputs/demo
	rm -rf outputs/digits
	$(BIN)/difflab train configs/digits.yaml --out outputs/digits
	$(BIN)/difflab sample outputs/digits --n 100 --out outputs/digits/samples.png
	$(BIN)/difflab eval outputs/digits --n 1000 --out outputs/digits/eval.json

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/core.py
	$(BIN)/python benchmarks/training.py throughput

# On a machine with a CUDA GPU and torch (no set-up: runs from src/): train a few steps with
# CUDA + bf16, sample, score, print throughput.
gpu-check:
	PYTHONPATH=src python3 scripts/gpu_check.py $(if $(OUT),--out $(OUT),)

clean:
	rm -rf $(VENV) outputs build src/*.egg-info
