# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/soul-bench: pyproject.toml requirements-ci.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q -e '.[test,toxicity]'
	touch $(BIN)/soul-bench

install: $(BIN)/soul-bench

demo: install
	$(BIN)/soul-bench run --task tofu --methods ga,npo --optimizers adamw,sophia --out runs/demo

test: install
	$(BIN)/python -m pytest -q

.PHONY: install demo test
