"""Spans around worker launch and restart: logging always, OpenTelemetry when installed."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("workmesh.worker")

try:  # pragma: no cover - depends on the optional extra
    from opentelemetry import trace as _otel_trace  # type: ignore[import-not-found, unused-ignore]

    _tracer: Any = _otel_trace.get_tracer("workmesh")
except ImportError:
    _tracer = None


@contextlib.contextmanager
def span(span_name: str, **attributes: str) -> Iterator[None]:
    """Log the start and end (with duration) of ``name``; an OTel span when available."""
    start = time.perf_counter()
    log.debug("%s start %s", span_name, attributes)
    otel = _tracer.start_as_current_span(span_name, attributes=attributes) if _tracer else None
    try:
        if otel is not None:
            with otel:
                yield
        else:
            yield
    finally:
        log.debug(
            "%s end %s after %.3f ms", span_name, attributes, (time.perf_counter() - start) * 1e3
        )
