# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo
STUDIES ?= 40

# Real label files (PadChest, SIIM, VinDr-Kaggle rows) ship inside this wheel; tests read them in
# place at test time and never copy them (see tests/realdata.py). Skipped with a message when offline.
TXV_WHEEL := build/cache/torchxrayvision-1.5.7-py3-none-any.whl

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,tokenizer,loader,chexbert]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cxr-instruct synth --out $(DEMO)/corpus --studies $(STUDIES) --seed 0
	$(BIN)/cxr-instruct tokenizer tiny --out $(DEMO)/tiny-tokenizer
	printf 'tokenizer:\n  model: ../tiny-tokenizer\n' >> $(DEMO)/corpus/build.yaml
	$(BIN)/cxr-instruct build --config $(DEMO)/corpus/build.yaml --out $(DEMO)/out
	$(BIN)/cxr-instruct card $(DEMO)/out
	$(BIN)/cxr-instruct preview $(DEMO)/out
	$(BIN)/cxr-instruct verify $(DEMO)/out
	$(BIN)/cxr-instruct audit $(DEMO)/out
	@echo "demo output: $(abspath $(DEMO)/out)"

$(TXV_WHEEL):
	$(BIN)/python -m pip download --quiet --no-deps torchxrayvision==1.5.7 -d build/cache \
		|| echo "torchxrayvision wheel not downloadable: real-data tests will be skipped"

test: $(STAMP) $(TXV_WHEEL)
	TORCHXRAYVISION_WHEEL=$(abspath $(TXV_WHEEL)) $(BIN)/python -m pytest -q

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
