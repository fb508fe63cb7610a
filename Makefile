# Two entry points: `make demo` and `make test`. Both create (or reuse) the
# project-local virtual environment .venv and install the package into it.
# `make test` also installs Debian's Chromium (for the HTML report's browser
# test) when it is missing and we are root.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; the browser tests will fail"; \
	  else echo "warning: chromium missing; run 'sudo apt-get install chromium chromium-driver'"; fi; }

demo: $(STAMP)
	$(VENV)/bin/logitshift demo --out runs/demo --force

test: $(STAMP) browser
	$(PY) -m pytest -q

# ruff (lint, format, complexity ≤ 15 over src/), mypy, the import-layer contract (import-linter), unused code (vulture)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff check src --select C901
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy src/logitshift
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture src/logitshift vulture_allow.py --min-confidence 60

clean:
	rm -rf runs .pytest_cache test-artifacts
