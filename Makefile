# The two commands a newcomer needs (see README.md):
#   make demo   set up, then start the whole local cluster on the bundled music catalog (building its
#               indexes the first time) and run example searches with feedback; Ctrl-C stops it
#   make test   set up, then lint, type-check and run the test suite
# Everything installs into .venv from the package registries; re-running skips what is done.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ltrr-installed
# buf lints the protos and checks them for breaking changes (protos/buf.yaml); from npm, pinned
BUF_VERSION := 1.75.0
BUF := .buf/node_modules/.bin/buf
BUF_STAMP := .buf/.buf-$(BUF_VERSION)

.PHONY: demo test lint proto-check buf pytest bench install clean

demo: $(STAMP)
	$(BIN)/ltrr up --examples $(DEMO_ARGS)

test: lint pytest

lint: $(STAMP) proto-check
	$(BIN)/ruff check .
	$(BIN)/mypy

# buf lint, then buf breaking against the previous commit's protos (protos/buf_check.py)
proto-check: $(STAMP) $(BUF_STAMP)
	$(BIN)/python protos/buf_check.py --buf $(BUF)

buf: $(BUF_STAMP)

$(BUF_STAMP):
	npm install --prefix .buf --no-save --no-audit --no-fund @bufbuild/buf@$(BUF_VERSION)
	touch $(BUF_STAMP)

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.lexical

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build here; any other torch pulls gigabytes of GPU packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[semantic,dev,bench]'
	# The default encoder's ONNX graph, exported from the local model files (else on first use).
	$(BIN)/python -m core.semantic.onnx_export
	touch $(STAMP)

clean:
	rm -rf $(VENV) .buf indexes .pytest_cache .mypy_cache .ruff_cache
