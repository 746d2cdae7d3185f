"""``workmesh bench --compare OLD.json NEW.json``: two runs side by side.

Absolute numbers move with the machine and with whatever else it runs, so the
comparison shows both the medians and the same-run ratios (ours / peer), which
are what carries over from one run to another; and it says first in what the two
machines differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._core import LOWER_IS_BETTER, TIMES

# What must match for absolute numbers to be comparable at all.
_MACHINE_KEYS = ("python_version", "implementation", "platform", "machine", "cpus_usable")


class CompareError(Exception):
    """A file that is not a ``workmesh bench --json`` result."""


def load(path: Path) -> dict[str, Any]:
    """A result document, checked for the parts the comparison reads."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CompareError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise CompareError(
            f"{path} is not a 'workmesh bench --json' result: expected an object with a "
            f"'cases' list, got {type(doc).__name__}"
        )
    return doc


def _median(case: dict[str, Any]) -> float | None:
    ours = case.get("ours")
    return ours.get("median") if isinstance(ours, dict) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _change(case: dict[str, Any], old: float | None, new: float | None) -> str:
    """new / old, and whether that is better (lower latency or memory, higher rates)."""
    if old is None or new is None or old == 0:
        return ""
    factor = new / old
    if abs(factor - 1) < 0.05:
        return f"{factor:.2f}{TIMES}"
    better = factor < 1 if case.get("kind") in LOWER_IS_BETTER else factor > 1
    return f"{factor:.2f}{TIMES} {'better' if better else 'worse'}"


def _ratio(case: dict[str, Any] | None) -> str:
    if case is None:
        return "-"
    ratio = case.get("ratio")
    return f"{ratio:.2f}{TIMES}" if isinstance(ratio, int | float) else case.get("status", "-")


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The comparison as text: machine differences, then one row per case."""
    lines = []
    old_machine, new_machine = old.get("machine", {}), new.get("machine", {})
    for key in _MACHINE_KEYS:
        if old_machine.get(key) != new_machine.get(key):
            lines.append(
                f"note: {key} differs ({old_machine.get(key)} -> {new_machine.get(key)}): "
                "compare the ratios, not the medians"
            )
    # Runs before the build was recorded were pure Python.
    old_build = old_machine.get("workmesh_build", "pure Python")
    new_build = new_machine.get("workmesh_build", "pure Python")
    if old_build != new_build:
        lines.append(f"note: workmesh's build differs ({old_build} -> {new_build})")
    old_cases = {case["name"]: case for case in old["cases"]}
    new_cases = {case["name"]: case for case in new["cases"]}
    headers = ("case", "unit", "old median", "new median", "new/old", "old ratio", "new ratio")
    rows = []
    for name in [*new_cases, *(n for n in old_cases if n not in new_cases)]:
        before, after = old_cases.get(name), new_cases.get(name)
        case = after or before
        assert case is not None
        old_median = _median(before) if before else None
        new_median = _median(after) if after else None
        rows.append(
            (
                name,
                str(case.get("unit", "")),
                _fmt(old_median),
                _fmt(new_median),
                _change(case, old_median, new_median),
                _ratio(before),
                _ratio(after),
            )
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if 2 <= col <= 6 else cell.ljust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(len(lines) - len(rows), "  ".join("-" * width for width in widths))
    return "\n".join(lines)
