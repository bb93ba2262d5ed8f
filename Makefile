# The two Quick-start commands: `make demo` and `make test`.
VENV  ?= .venv
# Many small torch ops on few cores: spinning OpenMP workers stall under load.
export OMP_WAIT_POLICY ?= PASSIVE
BIN   := $(VENV)/bin
STAMP := $(VENV)/.geo-installed
BROWSER_STAMP := $(VENV)/.browser-installed

.PHONY: setup demo test test-slow test-all bench clean

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh
	touch $@

# Headless Chromium + playwright-core, needed by the browser tests only.
$(BROWSER_STAMP): tools/setup_browser.sh | $(STAMP)
	bash tools/setup_browser.sh
	touch $@

setup: $(STAMP) $(BROWSER_STAMP)

demo: $(STAMP)
	$(BIN)/geo demo

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q

# Tests marked slow are left out of CI; this runs them too.
test-slow: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q -m "slow"

test-all: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) .pytest_cache
