"""Processes (layer L5): the Mesh, child processes, and the child's entry point."""

from ._mesh import ChildFailedToStart, ChildProcess, Mesh, describe_status

__all__ = ["ChildFailedToStart", "ChildProcess", "Mesh", "describe_status"]
