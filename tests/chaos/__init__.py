"""Chaos tests: child processes killed, spawned and restarted over and over under
traffic.  Short by default; WORKMESH_STRESS=1 runs the long version (see _scale.py)."""
