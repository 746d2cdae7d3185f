"""Fuzz tests: the stream splitter, the frame and payload decoders, a node fed frames
by a peer, a connection fed bytes by a raw socket, and the node state machine with
failures.  Counts scale with WORKMESH_STRESS (see tests/chaos/_scale.py); the long
run adds a plain seeded loop of a million inputs and the atheris harness
(atheris_frames.py)."""
