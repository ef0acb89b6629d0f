"""The HTTP API (FastAPI): the same services as the CLI, behind bearer-token authentication and limits."""
