"""Processes (layer L5): the Mesh, child processes, and the child's entry point."""

from ._mesh import ChildFailedToStart, ChildProcess, HostFailedToStart, Mesh, describe_status
from ._sandbox import Sandbox

__all__ = [
    "ChildFailedToStart",
    "ChildProcess",
    "HostFailedToStart",
    "Mesh",
    "Sandbox",
    "describe_status",
]
