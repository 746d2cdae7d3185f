"""What the tests need to know about how workmesh was built (pure or compiled)."""

from __future__ import annotations

import pytest

from workmesh._build import compiled_modules

# A compiled class's methods cannot be replaced on an instance, so a test that
# records calls by wrapping one runs against the pure-Python build only (which
# `make test` also runs; the compiled modules come from the same sources).
WRAPS_METHODS = "wraps a method of a compiled class to record its calls (pure-Python build only)"

python_only = pytest.mark.skipif(bool(compiled_modules()), reason=WRAPS_METHODS)
