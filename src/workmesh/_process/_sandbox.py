"""What a child process confines itself to before it runs anything of the caller's.

A :class:`Sandbox` is plain data: it is checked here, in the parent, when it is
built, travels to the child inside its invitation, and is checked again when it is
decoded there.  The child applies it (:func:`apply_sandbox`) as soon as it has
read its invitation -- just after ``exec`` for a cold child, just after ``fork``
for a warm one -- while it still has a single thread and before it has imported
the modules it was asked to run:

1. resource limits (``setrlimit``), in the order given;
2. ``PR_SET_NO_NEW_PRIVS`` (execve can no longer grant privileges: set-user-id
   bits and file capabilities stop working; a seccomp filter may then be
   installed without ``CAP_SYS_ADMIN``);
3. the ``setup`` hook, a ``"module:function"`` the child imports and calls: the
   place for a seccomp filter, a landlock ruleset, dropping capabilities.

Applying happens on the only thread there is, so every thread the child starts
later (its I/O thread, its entry function's, its workers') inherits what was
applied, per-thread attributes such as ``no_new_privs`` and seccomp filters
included.  If any step fails the child does not go on: it reports the failure,
with its traceback, and exits, and the spawn raises.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import resource
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import WorkmeshError

PR_SET_NO_NEW_PRIVS = 38

# What setrlimit accepts as a value: a count, or no limit at all.
_INFINITY = resource.RLIM_INFINITY
_RLIMIT_NAMES = frozenset(name for name in dir(resource) if name.startswith("RLIMIT_"))


class SandboxError(WorkmeshError):
    """A child could not apply its sandbox."""


class Sandbox(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Confinement a child applies to itself before it runs any of the caller's code.

    * ``rlimits`` -- resource limits by name, as in :mod:`resource`:
      ``{"RLIMIT_NOFILE": (256, 256), "RLIMIT_CORE": (0, 0)}``; each value is
      ``(soft, hard)``, non-negative ints or ``resource.RLIM_INFINITY``, soft not
      above hard.  Lowering a limit is always allowed; raising a hard limit needs
      privilege, and a refusal fails the spawn.
    * ``no_new_privs`` -- set ``PR_SET_NO_NEW_PRIVS`` (Linux); on by default.
    * ``setup`` -- ``"module:function"``, imported and called in the child after
      the limits and ``no_new_privs``, before the spawn's entry module and
      ``imports`` are imported.  The function takes no argument, or one: this
      Sandbox.  What it raises fails the spawn.
    """

    rlimits: dict[str, tuple[int, int]] = {}
    no_new_privs: bool = True
    setup: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rlimits, dict):
            raise TypeError(
                "Sandbox.rlimits must be a dict of name -> (soft, hard), "
                f"got {type(self.rlimits).__name__}"
            )
        for name, value in self.rlimits.items():
            _check_rlimit(name, value)
        if type(self.no_new_privs) is not bool:
            raise TypeError(
                f"Sandbox.no_new_privs must be a bool, got {self.no_new_privs!r} "
                f"({type(self.no_new_privs).__name__})"
            )
        if self.setup is not None:
            _check_setup(self.setup)


def _check_rlimit(name: object, value: object) -> None:
    if not isinstance(name, str) or name not in _RLIMIT_NAMES:
        known = ", ".join(sorted(_RLIMIT_NAMES))
        raise ValueError(f"Sandbox.rlimits: unknown resource {name!r}; expected one of {known}")
    where = f"Sandbox.rlimits[{name!r}]"
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"{where} must be a (soft, hard) tuple of two ints, got {value!r}")
    soft, hard = value
    for part, number in (("soft", soft), ("hard", hard)):
        if type(number) is not int or (number < 0 and number != _INFINITY):
            raise ValueError(
                f"{where}: the {part} limit must be an int >= 0 or "
                f"resource.RLIM_INFINITY ({_INFINITY}), got {number!r}"
            )
    if hard != _INFINITY and (soft == _INFINITY or soft > hard):
        raise ValueError(f"{where}: the soft limit {soft} is above the hard limit {hard}")


def _check_setup(setup: object) -> None:
    if not isinstance(setup, str):
        raise TypeError(
            f"Sandbox.setup must be a 'module:function' string or None, got {type(setup).__name__}"
        )
    module, colon, function = setup.partition(":")
    if not colon or not module or not function:
        raise ValueError(f"Sandbox.setup must be 'module:function', got {setup!r}")


def apply_sandbox(sandbox: Sandbox) -> None:
    """Confine this process as ``sandbox`` says (see the module docstring).

    Raises :class:`SandboxError`, its cause being what went wrong, at the first step
    that fails; the steps after it are not attempted.
    """
    for name, (soft, hard) in sandbox.rlimits.items():
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (OSError, ValueError) as exc:
            raise SandboxError(f"setrlimit({name}, ({soft}, {hard})) was refused: {exc}") from exc
    if sandbox.no_new_privs:
        _set_no_new_privs()
    if sandbox.setup is not None:
        _run_setup(sandbox)


def _set_no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise SandboxError("prctl(PR_SET_NO_NEW_PRIVS) failed") from OSError(
            errno, f"prctl: errno {errno}"
        )


def _run_setup(sandbox: Sandbox) -> None:
    assert sandbox.setup is not None
    module_name, _, attr = sandbox.setup.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (Exception, SystemExit) as exc:
        raise SandboxError(f"cannot load the sandbox setup {sandbox.setup!r}: {exc}") from exc
    if not callable(target):
        raise SandboxError(f"the sandbox setup {sandbox.setup!r} is not callable")
    call: Callable[[], object] = target
    if _takes_one_argument(target):
        call = lambda: target(sandbox)  # noqa: E731 - one place, one line
    try:
        outcome = call()
    except (Exception, SystemExit) as exc:
        raise SandboxError(f"the sandbox setup {sandbox.setup!r} failed: {exc}") from exc
    if inspect.isawaitable(outcome):
        close = getattr(outcome, "close", None)
        if close is not None:
            close()  # never started: no "was never awaited" warning
        raise SandboxError(
            f"the sandbox setup {sandbox.setup!r} must be a plain function, not a coroutine"
        )


def _takes_one_argument(fn: Callable[..., object]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: call them bare
        return False
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True
