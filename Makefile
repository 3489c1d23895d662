# convcli: `make demo` to see it work, `make test` to run the tests, `make check` before submitting.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SPECS  ?= architectures/s7.yaml architectures/s7_strided.yaml
RUNS   ?= runs

.PHONY: install demo test check lint clean

install: $(VENV)/.installed

# Re-install when the dependencies change. torch==2.14.1 / torchvision==0.29.1 come from pip's local cache.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/convcli inspect architectures/s7.yaml
	$(BIN)/convcli rf architectures/s7.yaml

test: install
	$(BIN)/python -m pytest

# The pre-submission gate: every submission spec must pass every rule, the accuracy rule included.
# Each spec needs a finished training run in $(RUNS)/: runs/NAME for NAME.yaml (convcli train SPEC --out
# runs/NAME), else the newest run trained from that spec file; a run of a different network or on a
# test subset does not count. --strict: a rule that cannot be checked fails. Exit 1 names what failed.
check: install
	$(BIN)/convcli inspect --strict --runs $(RUNS) $(SPECS)

lint: install
	$(BIN)/ruff check convcli tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
