# The two commands of the README: `make demo` and `make test`.
# Each installs what it needs: Debian packages (when missing), a virtualenv
# with atnb and its dev extras, and the pinned npm packages of the devnet.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atnb-installed
BUILD  ?= build

.PHONY: demo test lab install system node lint bench clean devnet-up devnet-down

demo: install
	$(BIN)/python scripts/demo.py --build $(BUILD)

test: install
	$(BIN)/ruff format --check atnb tests benchmarks scripts
	$(BIN)/ruff check atnb tests benchmarks scripts
	$(BIN)/python -m pytest -q -p no:cacheprovider

lab: install
	$(BIN)/python scripts/lab.py

bench: install
	$(BIN)/python benchmarks/run_all.py

install: system $(STAMP) node

system:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

node: $(STAMP)
	$(BIN)/python -c "from atnb.devnet._install import ensure_installed as e; e()"

lint: $(STAMP)
	$(BIN)/ruff format atnb tests benchmarks scripts
	$(BIN)/ruff check --fix atnb tests benchmarks scripts

devnet-up: install
	$(BIN)/python -m atnb.devnet up --seed

devnet-down:
	$(BIN)/python -m atnb.devnet down

clean:
	rm -rf $(BUILD) .pytest_cache test-output
