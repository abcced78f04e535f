# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo
STUDIES ?= 40

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cxr-instruct synth --out $(DEMO)/corpus --studies $(STUDIES) --seed 0
	$(BIN)/cxr-instruct build --config $(DEMO)/corpus/build.yaml --out $(DEMO)/out
	@echo "demo output: $(abspath $(DEMO)/out)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
