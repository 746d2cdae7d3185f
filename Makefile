# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv (with python3 -m venv) when it is missing and installs -e .[dev].
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The compiled build (WORKMESH_COMPILE=1: mypyc compiles the hot modules) lives in
# its own virtualenv as an installed wheel; it is rebuilt when a source changes.
CVENV ?= .venv-compiled
CPY := $(CVENV)/bin/python
CSTAMP := $(CVENV)/.installed-stamp
BUILD_INPUTS := pyproject.toml setup.py build_support/workmesh_build.py $(shell find src -name '*.py')

.PHONY: test demo bench bench-compiled lint typecheck layers pytest pytest-compiled clean stress

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests setup.py build_support
	$(VENV)/bin/ruff format --check src tests setup.py build_support

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict

layers: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	WORKMESH_EXPECT_COMPILED=0 $(PY) -m pytest

$(CSTAMP): $(BUILD_INPUTS)
	@test -x $(CPY) || $(PYTHON) -m venv $(CVENV)
	$(CPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# pip builds in ./build and keeps what is there: an extension left from an
	@# earlier build (a module since taken off the compiled list) would be packaged
	@# again, and clash with the new one at import.
	rm -rf build
	WORKMESH_COMPILE=1 $(CPY) -m pip install --quiet --disable-pip-version-check '.[dev]'
	@touch $(CSTAMP)

# The same suite against the compiled build.  It needs a C compiler and Python's
# headers; without either it is skipped with a note, except in CI.
HAVE_HEADERS := $(PYTHON) -c "import os, sys, sysconfig; \
	sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"
pytest-compiled:
	@if { command -v "$${CC:-cc}" >/dev/null 2>&1 && $(HAVE_HEADERS); } || [ "$${CI:-}" = true ]; then \
		$(MAKE) --no-print-directory $(CSTAMP) && \
		WORKMESH_EXPECT_COMPILED=1 $(CPY) -m pytest; \
	else \
		echo "no C compiler or no Python headers: skipping the compiled build's run of the suite"; \
	fi

test: lint typecheck layers pytest pytest-compiled

demo: $(STAMP)
	$(PY) -m workmesh demo

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m workmesh bench

bench-compiled: $(CSTAMP)
	rm -rf build
	WORKMESH_COMPILE=1 $(CPY) -m pip install --quiet --disable-pip-version-check '.[dev,bench]'
	$(CPY) -m workmesh bench

# The long chaos and fuzz runs (tens of minutes): WORKMESH_STRESS=1 scales every count
# up (a thousand kills, a million fuzzed inputs, ...); then the atheris harness for a
# million inputs, when atheris imports.  Both run even if the first fails; inputs
# atheris finds crashing are kept in the directory it names.
stress: $(STAMP)
	@status=0; \
	WORKMESH_STRESS=1 $(PY) -m pytest tests/chaos tests/fuzz --timeout=7200 || status=1; \
	if $(PY) -c "import atheris" 2>/dev/null; then \
		out=$$(mktemp -d "$${TMPDIR:-/tmp}/workmesh-atheris.XXXXXX"); \
		if $(PY) tests/fuzz/atheris_frames.py -runs=1000000 -artifact_prefix=$$out/; then \
			rm -rf "$$out"; \
		else \
			status=1; echo "atheris found a crash: the input is in $$out"; \
		fi; \
	else \
		echo "atheris is not installed: skipping the coverage-guided run"; \
	fi; \
	exit $$status

clean:
	rm -rf $(VENV) $(CVENV) build dist src/*.egg-info .mypy_cache .ruff_cache .hypothesis
