"""Benchmarks of what the backend costs: `make bench` (python -m bench.run).

One module per measurement (harness, queue, publishing, rescoring, gpu); each exposes ``run(size, root)``
returning a JSON-ready dict of figures, and says in it which targets it met.
"""
