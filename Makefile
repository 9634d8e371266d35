# Two entry points do all set-up on a fresh machine:
#   make demo  -- create .venv, install everything, train + evaluate + explain on the embedded demo
#   make test  -- same set-up, then ruff and the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format setup bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,argos,eflomal]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/attnmt demo

test: $(STAMP)
	-bash scripts/install_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/train_bench.py --config configs/lstm_tatoeba.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
