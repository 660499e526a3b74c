# Verticore: `make demo` and `make test` work on a fresh machine (they create .venv and install).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.verticore-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint browser-deps bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on this disk (an unpinned torch pulls a multi-GB CUDA build);
	# on a CUDA host install the CUDA torch instead and use the `gpu` extra (see README, "Installing")
	$(PY) -m pip install -q torch==2.13.0
	# `cpu` brings faiss-cpu; `gpu` (faiss-gpu-cu12) replaces it, never both (one `faiss` module)
	$(PY) -m pip install -q -e ".[dev,cpu]"
	@touch $(STAMP)

install: $(STAMP)

# Debian chromium for the headless-browser dashboard tests, installed once as root or with passwordless
# sudo (`sudo -n` never prompts). Without either, the browser tests skip and say why (they fail under CI).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  echo "installing Debian chromium for browser tests"; \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    2>/dev/null || echo "chromium not installed (needs root or passwordless sudo): the browser tests will be skipped"; }

demo: install
	$(PY) -m verticore.demo

lint: install
	$(PY) -m ruff check .

test: install browser-deps lint
	$(PY) -m pytest -q

bench: install
	$(PY) bench/throughput.py
	$(PY) bench/index.py
	$(PY) bench/finetune_phrasebank.py

clean:
	rm -rf $(VENV) .verticore .pytest_cache .ruff_cache
