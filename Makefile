# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo
STUDIES ?= 40
EXTRAS := test,tokenizer,loader,chexbert,translation

# Real label files (PadChest, SIIM, VinDr-Kaggle rows) ship inside this wheel; tests read them in
# place at test time and never copy them (see tests/realdata.py). Skipped with a message when offline.
TXV_WHEEL := build/cache/torchxrayvision-1.5.7-py3-none-any.whl

.PHONY: demo test lint install consumers clean

# One line per step; pip itself stays quiet (its per-package lines would flood the output).
$(STAMP): pyproject.toml
	@if test -x $(BIN)/python; then echo "install: using the virtualenv $(VENV)/"; \
	else echo "install: creating the virtualenv $(VENV)/ with $(PYTHON)"; $(PYTHON) -m venv $(VENV); fi
	@echo "install: upgrading pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "install: pip install -e '.[$(EXTRAS)]': about 2.3 GB, mostly torch; a first download takes minutes"
	@$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)
	@echo "install: done, $(VENV)/ is ready"

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cxr-instruct synth --out $(DEMO)/corpus --studies $(STUDIES) --seed 0
	$(BIN)/cxr-instruct tokenizer tiny --out $(DEMO)/tiny-tokenizer
	printf 'tokenizer:\n  model: ../tiny-tokenizer\n  batch_size: 4\n' >> $(DEMO)/corpus/build.yaml
	$(BIN)/cxr-instruct build --config $(DEMO)/corpus/build.yaml --out $(DEMO)/out
	$(BIN)/cxr-instruct card $(DEMO)/out
	$(BIN)/cxr-instruct preview $(DEMO)/out
	$(BIN)/cxr-instruct verify $(DEMO)/out
	$(BIN)/cxr-instruct audit $(DEMO)/out
	@echo "demo output: $(abspath $(DEMO)/out)"

$(TXV_WHEEL):
	$(BIN)/python -m pip download --quiet --no-deps torchxrayvision==1.5.7 -d build/cache \
		|| echo "torchxrayvision wheel not downloadable: real-data tests will be skipped"

# The training frameworks whose own loaders read the exports (tests/consumers): one virtualenv each,
# from a fully pinned list in consumers/, installed --no-deps (the lists say what they leave out and
# why). The CPU torch on this disk serves all three. torchaudio (LLaMA-Factory imports it) ships a
# CUDA extension that cannot load beside the CPU torch: removed, torchaudio imports without it.
CONSUMERS := llamafactory swift llava
CONSUMER_STAMPS := $(foreach name,$(CONSUMERS),.venv-$(name)/.installed)

.venv-%/.installed: consumers/%.txt
	@echo "install: .venv-$*/ from consumers/$*.txt (pinned, --no-deps)"
	@rm -rf .venv-$* && $(PYTHON) -m venv .venv-$*
	@.venv-$*/bin/python -m pip install --quiet --no-deps -r consumers/$*.txt
	@rm -f .venv-$*/lib/python3*/site-packages/torchaudio/lib/*.so
	@touch $@

consumers: $(CONSUMER_STAMPS)

# The gates: lint and format check (ruff) and types (mypy, its files and settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

test: lint $(STAMP) $(TXV_WHEEL) consumers
	TORCHXRAYVISION_WHEEL=$(abspath $(TXV_WHEEL)) $(BIN)/python -m pytest -q

# The edit-test loop, under a minute: every test not marked slow (no build, Beam, browser or emulator;
# the marker is explained in tests/tiers.py). `make test` still runs everything.
.PHONY: test-fast
test-fast: $(STAMP)
	TORCHXRAYVISION_WHEEL=$(abspath $(TXV_WHEEL)) $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf build $(VENV) $(foreach name,$(CONSUMERS),.venv-$(name)) .pytest_cache .hypothesis
