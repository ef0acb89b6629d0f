"""A query parameter an operation does not take is refused, naming it and what the operation takes: a
misspelt filter must not answer as if it had not been given (schemathesis found it accepted)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api


@pytest.mark.parametrize(
    ("path", "unknown"),
    [
        ("/api/queue?statuz=FAILED", "statuz"),
        ("/api/leaderboard?model_type=chat", "model_type"),
        ("/api/results?format=csv&=null", ""),
        ("/api/requests/1?verbose=1", "verbose"),
    ],
)
def test_an_unknown_query_parameter_is_a_422_that_names_it(app, path, unknown):
    with TestClient(create_api(app)) as client:
        answer = client.get(path)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and f"unknown query parameter '{unknown}'" in error["message"]
    assert "this operation takes" in error["message"]


def test_the_parameters_an_operation_takes_still_work(app):
    with TestClient(create_api(app)) as client:
        assert client.get("/api/queue?status=FAILED&limit=5&offset=0").status_code == 200
        assert client.get("/api/leaderboard?type=chat&sort=IFEval&order=asc").status_code == 200
        assert client.get("/healthz").status_code == 200
