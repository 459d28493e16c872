# Everything a user needs: `make run`, `make test`, `make demo`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test demo bench screenshots clean

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

bench: install
	$(BIN)/python bench/finetune_overhead.py
	$(BIN)/python bench/chat_decode.py
	$(BIN)/python bench/log_follow.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/serve_faults.py
	$(BIN)/python bench/tui_startup.py
	$(BIN)/python bench/merged_decode.py
	$(BIN)/python bench/rehearse.py --model qwen2.5-0.5b --steps 1 --seq-len 256

screenshots: install
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info
