# Two entry points: `make demo` and `make test`. Both create (or reuse) the
# project-local virtual environment .venv and install the package into it.
# `make test` also installs Debian's Chromium (for the HTML report's browser
# test) and Debian's fortunes (the text corpus) when they are missing and we are root.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install browser fortunes clean

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

# Debian's fortunes: the real text corpus the text model is trained on (logitshift.core.text)
fortunes:
	@test -f /usr/share/games/fortunes/computers || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes fortunes-min >/dev/null) \
	      || echo "warning: could not install fortunes; the text tests and the text model need it"; \
	  else echo "warning: fortunes missing; run 'sudo apt-get install fortunes fortunes-min'"; fi; }

demo: $(STAMP) fortunes
	$(VENV)/bin/logitshift demo --out runs/demo --force

test: $(STAMP) browser fortunes
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
