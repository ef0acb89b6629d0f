"""Evaluation runs: pinned tasks and their data, the harness runner, and the worker loop."""
