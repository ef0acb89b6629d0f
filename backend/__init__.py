"""A reproducible backend for open LLM leaderboards."""

__version__ = "0.1.0"
