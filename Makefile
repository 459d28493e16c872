# Everything a user needs: `make run`, `make test`, `make demo`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test demo bench bench-quick screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned: on this kind of machine torch==2.13.0 is the CPU wheel; any
# looser spec would pull a multi-GB CUDA build before the project's own range is considered.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/aitk-tui

# The suite, then the app in a real terminal (tmux) end to end.
test: install
	$(BIN)/python -m pytest -q
	tests/e2e_tmux.sh

demo: install
	$(BIN)/aitk demo

# Every bench, one table of figures and goals (tiny and 0.5B shape), rows in bench/results.json
# (or $OUT/bench-results.json). `make bench-quick`: a smoke run of the tiny-shape benches.
bench: install
	$(BIN)/python bench/all.py

bench-quick: install
	$(BIN)/python bench/all.py --quick

screenshots: install
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info
