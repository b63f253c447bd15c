# Quick start targets (see README). Both create ./.venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install browser clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines here carry these wheels on disk; elsewhere pip downloads them
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q "torch>=2.2" torchvision
	$(BIN)/pip install -q -e ".[dev,train,distributed]"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the real-browser tests. A failed install stops `make test` loudly; to run the
# rest without a browser on a machine that cannot have one: make test DENSPRUNE_REQUIRE_BROWSER=0
DENSPRUNE_REQUIRE_BROWSER ?= 1
export DENSPRUNE_REQUIRE_BROWSER
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || { echo "ERROR: could not install Debian's chromium for the browser tests (apt-get install chromium)." >&2; \
	       if [ "$(DENSPRUNE_REQUIRE_BROWSER)" = "1" ]; then echo "Run 'make test DENSPRUNE_REQUIRE_BROWSER=0' to skip them knowingly." >&2; exit 1; fi; }

demo: $(STAMP)
	DENSPRUNE_DEMO_WORKSPACE=workspaces/demo $(BIN)/densprune demo

# two pytest workers (pytest-xdist), each test file whole on one of them: its module fixtures built once
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# ruff (pyflakes, pycodestyle, import order) and the import-direction contract in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) workspaces artifacts
