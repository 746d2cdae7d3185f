# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv (with python3 -m venv) when it is missing and installs -e .[dev].
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo bench lint typecheck layers pytest clean stress

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict

layers: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(PY) -m pytest

test: lint typecheck layers pytest

demo: $(STAMP)
	$(PY) -m workmesh demo

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m workmesh bench

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
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .hypothesis
