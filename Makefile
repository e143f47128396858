# One entry point for people and CI. `make test` sets up .venv on a fresh machine and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the project: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# pytest-xdist workers: the suite is mostly single-threaded Python, so one worker per core.
TEST_WORKERS ?= 2

.PHONY: setup test test-slow test-td015 lint typecheck docs train bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Configuration in pyproject.toml ([tool.mypy]); checks src/ppokit.
typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q -m "not slow" -x --timeout=600 -n $(TEST_WORKERS) --dist worksteal

test-slow: setup
	$(BIN)/pytest -q -m slow --timeout=3600

# The newest tensordict line ppokit admits, without torchrl (which pins tensordict<0.15).
# The fused-update tests are left to `make test`: they compile the same module plan that
# test_compile.py and test_execution_path.py already check on 0.15, and take a third of the time.
test-td015:
	$(PYTHON) -m venv .venv-td015
	.venv-td015/bin/pip install -q --upgrade pip
	.venv-td015/bin/pip install -q "$(TORCH_PIN)"
	.venv-td015/bin/pip install -q -e ".[gym]" "tensordict>=0.15,<0.16" pytest pytest-timeout pytest-xdist hypothesis
	.venv-td015/bin/pytest -q -m "not slow and not distributed" --timeout=600 -n $(TEST_WORKERS) tests/objectives tests/value tests/modules \
		--ignore=tests/objectives/test_fused_update.py --ignore=tests/objectives/test_fused_update_sharing.py

# The documentation site (mkdocs.yml, docs/); --strict turns every warning (a broken link, a
# reference that does not resolve) into an error. Output in site/.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

train: setup
	$(BIN)/ppokit train --env CartPole-v1 --run-dir runs/cartpole --overwrite

clean:
	rm -rf $(VENV) .venv-td015 runs site
