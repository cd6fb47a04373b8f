# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing (or when pyproject.toml changed) and then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kit-installed

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode: a plain .pth path, so a checkout's own kit/ always wins on sys.path
	$(PY) -m pip install -q -e ".[dev]" --config-settings editable_mode=compat
	# keras-hub without its tensorflow-text requirement (see pyproject.toml); it needs Python 3.11+
	$(PY) -m pip install -q --no-deps "keras-hub==0.26.*" || echo "kit: keras-hub not installed; the preset route stays off"
	touch $(STAMP)

# each run gets its own folder (demo/YYYYmmdd-HHMMSS): kit never overwrites earlier output
demo: $(STAMP)
	$(VENV)/bin/kit demo --out demo/$$(date +%Y%m%d-%H%M%S)

# the layer contracts of docs/architecture.md first (seconds), then the tests
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
