# convcli: `make demo` to see it work, `make test` to run the tests, `make check` before submitting.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SPECS  ?= architectures/s7.yaml architectures/s7_strided.yaml

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

# The pre-submission gate: every submission spec must pass its rules (exit 1 names the failing rule).
check: install
	$(BIN)/convcli inspect $(SPECS)

lint: install
	$(BIN)/ruff check convcli tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
