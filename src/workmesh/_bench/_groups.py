"""Cases that share one measurement: a *group* measures several sides in the same rounds.

A group is one function that, given the :class:`Settings`, measures every one of
its *sides* (workmesh in one or more configurations, and the peers) in the
harness's alternating rounds, and returns a :class:`Measured`: one
:class:`Series` per side, or the reason a side did not run (a peer whose package
is missing, say), plus extra figures per side.  Each of the group's *rows* is a
registered case that reports one side against another; the first case of a group
that runs measures it, and the others of the same run reuse that measurement, so
their ratios really are same-run ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar, cast

from ._core import (
    Bound,
    Case,
    CaseSkipped,
    Figure,
    Kind,
    Outcome,
    Series,
    Settings,
    Target,
    _alternate,
    register,
)

R = TypeVar("R")


@dataclass
class Measured:
    """What one measurement of a group found."""

    # Each side's series, or why that side did not run.
    series: dict[str, Series | str] = field(default_factory=dict)
    # Extra figures, by side: shown with the first row whose own side it is.
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One case of a group: side ``ours`` reported against side ``peer``."""

    suffix: str  # the case is named group + suffix; "" for the group's first case
    ours: str  # a key of Measured.series
    peer: str | None = None  # a key of Measured.series, or no peer
    target: Target | None = None
    bound: Bound | None = None
    kind: Kind | None = None  # default: the group's kind
    peer_label: str | None = None  # the peer as the table names it (default: its key)
    about: str | None = None  # the description (default: made up from the sides)


def alternate(settings: Settings, sides: dict[str, Callable[[], R]]) -> dict[str, list[R]]:
    """Every side once per round, in alternating order (the harness's rounds)."""
    names = list(sides)
    rounds = _alternate(settings, [sides[name] for name in names])
    return dict(zip(names, rounds, strict=True))


# One measurement of a group serves every case of it in the same run.  A run is told
# by its Settings object (the harness hands the same one to every case); the memo
# keeps that object alive, so a later run's new Settings never matches it.
_last_run: dict[str, tuple[Settings, object]] = {}


def once_per_run(group: str, measure: Callable[[Settings], R], settings: Settings) -> R:
    """``measure(settings)``, computed once per run for ``group`` (a failure too)."""
    last = _last_run.get(group)
    if last is None or last[0] is not settings:
        try:
            last = _last_run[group] = (settings, measure(settings))
        except Exception as exc:
            _last_run[group] = (settings, exc)
            raise
    outcome = last[1]
    if isinstance(outcome, Exception):
        raise RuntimeError(f"{group} failed in this run: {outcome}") from outcome
    return cast(R, outcome)


def _measured(group: str, measure: Callable[[Settings], Measured], settings: Settings) -> Measured:
    return once_per_run(group, measure, settings)


def _outcome(
    group: str,
    measure: Callable[[Settings], Measured],
    row: Row,
    with_figures: bool,
    settings: Settings,
) -> Outcome:
    measured = _measured(group, measure, settings)
    ours = measured.series.get(row.ours)
    if ours is None:
        raise RuntimeError(f"{group} measured no side {row.ours!r}")
    if isinstance(ours, str):
        raise CaseSkipped(ours)
    peer: Series | None = None
    if row.peer is not None:
        found = measured.series.get(row.peer)
        if found is None:
            raise RuntimeError(f"{group} measured no side {row.peer!r}")
        if isinstance(found, str):
            raise CaseSkipped(found)
        peer = found
    figures = measured.figures.get(row.ours, {}) if with_figures else {}
    return Outcome(ours, peer, figures)


def register_group(
    name: str,
    kind: Kind,
    measure: Callable[[Settings], Measured],
    about: str,
    rows: Sequence[Row],
) -> None:
    """Register one case per row; the first row's description is ``about``."""
    shown: set[str] = set()
    for index, row in enumerate(rows):
        case_name = name + row.suffix
        label = row.peer_label or row.peer
        if row.about is not None:
            text = row.about
        elif index == 0:
            text = about
        else:
            versus = f" against {label}" if label else ""
            text = f"as {name}, same run: {row.ours}{versus}"
        with_figures = row.ours not in shown
        shown.add(row.ours)
        run = partial(_outcome, name, measure, row, with_figures)
        register(
            Case(
                case_name,
                text,
                row.kind or kind,
                run,
                peer=label,
                target=row.target,
                bound=row.bound,
            )
        )
