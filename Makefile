# One entry point. `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QMOF ?= $(if $(MOFBALORA_QMOF),$(MOFBALORA_QMOF),../shared/data/qmof)

.PHONY: install install-dev install-moftransformer install-checks demo test test-fast bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build.
install: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,uma]"
	bash scripts/install_moftransformer.sh $(BIN)/python
	bash scripts/install_checks.sh $(BIN)/python

# MOF chemistry checks (mofchecker-next, GPL-2.0, optional): see scripts/install_checks.sh.
install-checks: $(BIN)/python
	bash scripts/install_checks.sh $(BIN)/python

# The MOFTransformer backbone's extra alone (moftransformer 2.2.0 --no-deps, pinned deps, GRIDAY built).
install-moftransformer: $(BIN)/python
	bash scripts/install_moftransformer.sh $(BIN)/python

# The main job on the shipped default model: 40 CoRE MOF 2019 candidates (awkward files included), ranked.
demo: install
	$(BIN)/mofbalora --help
	$(BIN)/mofbalora data info $(QMOF) --limit 200
	$(BIN)/mofbalora candidates coremof --set 2019-ASR --limit 40 --seed 1 --out demo/candidates
	$(BIN)/mofbalora screen demo/candidates --top 10 --samples 32 --out demo/ranked.csv --plot demo/screen.png

# ruff (pyproject.toml [tool.ruff]: line length 100, and the code as `ruff format` writes it), then lint-imports (the layer contracts in pyproject.toml
# [tool.importlinter]; docs/architecture.md), then the whole test suite: what CI runs
test: install-dev
	$(BIN)/ruff check mofbalora tests benchmarks scripts
	$(BIN)/ruff format --check mofbalora tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# the same checks and the quick tests only (tests marked `slow` are left out)
test-fast: install-dev
	$(BIN)/ruff check mofbalora tests benchmarks scripts
	$(BIN)/ruff format --check mofbalora tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

bench: install-dev
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint:
	$(BIN)/ruff check mofbalora tests benchmarks scripts
	$(BIN)/ruff format --check mofbalora tests benchmarks scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
