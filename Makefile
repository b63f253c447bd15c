# Quick start targets (see README). Both create ./.venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install browser clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines here carry these wheels on disk; elsewhere pip downloads them
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q "torch>=2.2" torchvision
	$(BIN)/pip install -q -e ".[dev,train,distributed]"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the real-browser test (skipped, with a reason, when it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium not installed: browser tests will be skipped"; }

demo: $(STAMP)
	$(BIN)/densprune demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) workspaces artifacts
