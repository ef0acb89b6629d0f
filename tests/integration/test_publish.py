"""Publishing on a real database (SQLite and PostgreSQL) to a real folder and to a small, honest Hub."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from backend.cli.publish import download, publish
from backend.domain import ModelType, Precision
from backend.errors import PublishFailed
from backend.evaluation import synthetic
from backend.evaluation.data import MANIFEST
from backend.evaluation.materialize import materialize
from backend.evaluation.runner import RunResult
from backend.evaluation.tasks import load_task_set
from backend.publish.table import REFERENCE_COLUMNS
from backend.publish.targets import HubDatasetTarget, LocalFolderTarget
from backend.retry import Backoff
from backend.storage.model_metadata import ModelMetadata

from .conftest import new_request

FIXTURE = Path(__file__).parents[1] / "fixtures" / "results" / "open_llm_v2_results.json"
MODELS = [
    ("org-a/alpha", Precision.BFLOAT16, ModelType.PRETRAINED, 3600.0),
    ("org-b/beta", Precision.FLOAT16, ModelType.CHAT, 7200.0),
    ("org-c/gamma", Precision.BFLOAT16, ModelType.MERGE, None),
]


def _samples(folder: Path, task: str) -> str:
    path = folder / f"samples_{task}_2026-01-01T12-00-00.000001.jsonl"
    lines = [
        {
            "doc_id": i,
            "doc": {"question": f"q{i}", "choices": ["a", "b"]},
            "target": 0,
            "arguments": {"gen_args_0": {"arg_0": f"q{i}", "arg_1": " a"}},
            "resps": [[["-1.5", "False"]]],
            "filtered_resps": [["-1.5", "False"]],
            "filter": "none",
            "metrics": ["acc_norm"],
            "doc_hash": f"d{i}",
            "prompt_hash": f"p{i}",
            "target_hash": f"t{i}",
            "acc_norm": float(i % 2),
        }
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def _mirror(tmp_path: Path) -> Path:
    """A synthetic data mirror shared by the tests of this process (a run's task files are built from it)."""
    root = tmp_path.parent / "publish-data-mirror"
    if not (root / MANIFEST).is_file():
        synthetic.synthesize(root, rows=1)
    return root


def evaluate(
    app,
    clock,
    tmp_path: Path,
    model: str,
    precision: Precision,
    model_type: ModelType,
    seconds,
    *,
    edit: Callable[[dict[str, Any]], None] | None = None,
    **request_fields: Any,
):
    """A request taken through the queue and finished by the worker's own code from a realistic run: the
    reference's results file, a sample file and the run's task files (only the harness run is left out).
    ``edit`` changes the reference's results before the run reports them; ``request_fields`` (params_b=...)
    change the request."""
    request = app.requests.create(
        replace(new_request(model=model, precision=precision), model_type=model_type, **request_fields),
        clock(),
        None,
    )
    claimed = app.queue.claim("worker-1")
    assert claimed is not None and claimed.id == request.id
    spec = app.worker.spec(claimed)
    attempt = Path(spec.output_dir)
    materialize(load_task_set(app.config.task_set), attempt / "tasks", _mirror(tmp_path))
    results = json.loads(FIXTURE.read_text())
    results["total_evaluation_time_seconds"] = seconds
    if edit is not None:
        edit(results)
    results_file = attempt / "results_2026-01-01T12-00-00.000001.json"
    results_file.write_text(json.dumps(results))
    clock.advance(60)
    run = RunResult(
        ok=True,
        attempt_dir=attempt,
        log_path=attempt / "run.log",
        started_at=clock() - timedelta(seconds=30),
        finished_at=clock(),
        outcome={
            "results_file": str(results_file),
            "samples_files": [_samples(attempt, "leaderboard_musr_team_allocation")],
            "hardware": {"gpu": "test"},
        },
    )
    app.worker.finish_run(claimed, spec, run, "worker-1")
    evaluation = app.evaluations.get(request.id, app.config.name)
    assert evaluation is not None
    return request, evaluation


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _publications(app) -> int:
    from sqlalchemy import func, select

    from backend.storage.schema import publications

    with app.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(publications)).scalar_one())


def test_publish_three_models_to_a_folder_loads_with_datasets(app, clock, tmp_path):
    import datasets

    stored = [evaluate(app, clock, tmp_path, *m) for m in MODELS]
    app.admin.flag("org-b/beta", "admin", "contaminated")
    app.admin.add_official_provider("org-a", "admin")
    # The scheduler refreshed alpha's Hub metadata; beta and gamma were never refreshed.
    app.model_metadata.save(ModelMetadata("org-a/alpha", 7, False, "mit", clock()))
    folder = tmp_path / "published"
    report = app.publishing.publish(LocalFolderTarget(folder))
    assert report.published == 3

    table = datasets.load_dataset(str(folder), split="train")
    assert table.column_names[:36] == list(REFERENCE_COLUMNS)
    assert "Average ⬆️ stderr" in table.column_names and "Config hash" in table.column_names
    rows = {row["fullname"]: row for row in table}
    assert set(rows) == {"org-a/alpha", "org-b/beta", "org-c/gamma"}
    for request, evaluation in stored:
        row = rows[request.model]
        assert row["eval_name"] == f"{request.model.replace('/', '_')}_{request.precision.value}"
        assert row["Precision"] == request.precision.value
        assert row["Average ⬆️"] == pytest.approx(evaluation.scores["Average ⬆️"])
        assert row["IFEval"] == pytest.approx(evaluation.scores["IFEval"])
        assert row["Model sha"] == request.sha
        assert row["Model"] == f"[{request.model}](https://huggingface.co/{request.model})"
        assert row["Request id"] == request.id
        assert row["Submission Date"] == "2026-01-01"
    assert rows["org-a/alpha"]["CO₂ cost (kg)"] == pytest.approx(3600 / 3600 * 5.6 * 269.8 / 1000)
    assert rows["org-b/beta"]["CO₂ cost (kg)"] == pytest.approx(2 * 5.6 * 269.8 / 1000)
    assert rows["org-c/gamma"]["CO₂ cost (kg)"] == -1
    assert (rows["org-a/alpha"]["T"], rows["org-b/beta"]["T"], rows["org-c/gamma"]["T"]) == ("🟢", "💬", "🤝")
    assert [rows[m]["Merged"] for m in ("org-a/alpha", "org-c/gamma")] == [False, True]
    assert [rows[m]["Flagged"] for m in ("org-a/alpha", "org-b/beta")] == [False, True]
    assert [rows[m]["Official Providers"] for m in ("org-a/alpha", "org-b/beta")] == [True, False]
    alpha, beta = rows["org-a/alpha"], rows["org-b/beta"]
    assert (alpha["Hub ❤️"], alpha["Available on the hub"], alpha["Hub License"]) == (7, False, "mit")
    assert (beta["Hub ❤️"], beta["Available on the hub"], beta["Hub License"]) == (
        0,
        True,
        stored[1][0].license,
    )

    # The results file: the harness's output plus our block.
    request, evaluation = stored[0]
    results_file = next((folder / "results" / "org-a" / "alpha").glob("results_*.json"))
    assert results_file.name == "results_2026-01-01T12-01-00.000000.json"
    published = json.loads(results_file.read_text())
    assert published["results"] == evaluation.results["results"]
    assert published["leaderboard"]["scores"] == evaluation.scores
    assert published["leaderboard"]["command"].startswith("leaderboard run org-a/alpha --revision ")
    assert published["leaderboard"]["model_sha"] == request.sha

    # Details: loadable by name, nested values as JSON text.
    details = datasets.load_dataset(str(folder), "details_org-a__alpha__leaderboard_musr_team_allocation")
    sample = details["latest"][0]
    assert sample["doc_id"] == 0 and json.loads(sample["doc"])["question"] == "q0"
    assert sample["doc_hash"] == "d0" and json.loads(sample["metrics"]) == ["acc_norm"]
    # The requests and votes mirror.
    assert (folder / "requests" / "votes_data.jsonl").is_file()
    assert len(list((folder / "requests" / "org-a").glob("*.json"))) == 1
    # The CSV holds the same columns.
    header = (folder / "leaderboard.csv").read_text().splitlines()[0]
    assert header.startswith('"eval_name","Precision","Type","T"')


def test_publishing_again_changes_nothing_and_a_new_evaluation_adds_one_row(app, clock, tmp_path):
    for m in MODELS[:2]:
        evaluate(app, clock, tmp_path, *m)
    folder = tmp_path / "published"
    service = app.publishing
    service.publish(LocalFolderTarget(folder))
    before, rows_before = _snapshot(folder), _publications(app)

    clock.advance(3600)
    again = service.publish(LocalFolderTarget(folder))
    assert (again.published, again.changed_files) == (0, [])
    assert _snapshot(folder) == before and _publications(app) == rows_before

    evaluate(app, clock, tmp_path, *MODELS[2])
    service.publish(LocalFolderTarget(folder))
    after = _snapshot(folder)
    assert _publications(app) == rows_before + 1
    assert len(pq.read_table(folder / "leaderboard.parquet")) == 3
    new_results = [p for p in set(after) - set(before) if p.startswith("results/")]
    assert new_results == [next(p for p in after if p.startswith("results/org-c/gamma/"))]
    assert all(after[p] == before[p] for p in before if p.startswith(("results/", "details/")))


def test_cli_publish_and_download(app, clock, tmp_path, database_url, monkeypatch):
    evaluate(app, clock, tmp_path, *MODELS[0])
    monkeypatch.setenv("LEADERBOARD_DATABASE_URL", database_url)
    monkeypatch.setenv("LEADERBOARD_RESULTS", str(tmp_path / "out"))
    runner = CliRunner()
    first = runner.invoke(publish, [])
    assert first.exit_code == 0, first.output
    assert "published 1 evaluation(s)" in first.output
    assert "up to date" in runner.invoke(publish, []).output
    result = runner.invoke(download, ["--format", "json", "--out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t.json").read_text())[0]["fullname"] == "org-a/alpha"
    runner.invoke(download, ["--format", "csv", "--out", str(tmp_path / "t.csv")])
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "out" / "leaderboard.csv").read_bytes()


def test_cli_reports_a_failed_target_and_what_is_left(app, clock, tmp_path, database_url, monkeypatch):
    evaluate(app, clock, tmp_path, *MODELS[0])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")
    monkeypatch.setenv("LEADERBOARD_DATABASE_URL", database_url)
    monkeypatch.setenv("LEADERBOARD_RESULTS", str(blocker))
    result = CliRunner().invoke(publish, [])
    assert result.exit_code == 1
    assert "error [publish_failed]" in result.output and "1 evaluation(s) left in the outbox" in result.output


class FakeHub(BaseHTTPRequestHandler):
    """The endpoints create_commit calls: README validation, preupload (regular mode, no LFS), commit."""

    commits: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/api/validate-yaml"):
            self._reply({"errors": [], "warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            self._reply(
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                }
            )
        elif "/commit/" in self.path:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {
                item["value"]["path"]: base64.b64decode(item["value"]["content"])
                for item in lines
                if item["key"] == "file"
            }
            header = next(item["value"] for item in lines if item["key"] == "header")
            oid = hashlib.sha1(str(len(self.commits)).encode()).hexdigest()  # one per commit, as on the Hub
            self.commits.append({"path": self.path, "summary": header["summary"], "files": files, "oid": oid})
            host = self.headers["Host"]
            self._reply({"commitUrl": f"http://{host}/datasets/org/results/commit/{oid}", "commitOid": oid})
        else:
            self.send_error(404)

    def _published(self) -> bytes | None:
        """The newest committed content of a /datasets/org/results/resolve/main/<path> file."""
        path = self.path.split("/resolve/main/", 1)[-1]
        found = [c["files"][path] for c in self.commits if path in c["files"]]
        return found[-1] if found else None

    def _file_headers(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commits[-1]["oid"])
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_HEAD(self) -> None:
        data = self._published()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._file_headers(data)

    def do_GET(self) -> None:
        data = self._published()
        if data is None:
            self.do_HEAD()
        else:
            self._file_headers(data)
            self.wfile.write(data)


@pytest.fixture
def fake_hub(monkeypatch) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    commits: list[dict[str, Any]] = []
    handler = type("Handler", (FakeHub,), {"commits": commits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", commits
    server.shutdown()
    server.server_close()


def test_unreachable_hub_keeps_the_outbox_and_a_later_publish_delivers_it(app, clock, tmp_path, fake_hub):
    endpoint, commits = fake_hub
    for m in MODELS[:2]:
        evaluate(app, clock, tmp_path, *m)
    service = app.publishing
    slept: list[float] = []
    retry = Backoff(attempts=3, base_s=0.5, max_s=60.0)
    down = HubDatasetTarget("org/results", endpoint="http://127.0.0.1:9", retry=retry, sleep=slept.append)
    with pytest.raises(PublishFailed, match="2 evaluation\\(s\\) left in the outbox"):
        service.publish(down)
    assert slept == [0.5, 1.0]  # bounded exponential backoff
    assert service.outbox(down) == 2

    up = HubDatasetTarget("org/results", endpoint=endpoint, retry=retry, sleep=slept.append)
    report = service.publish(up)
    assert (report.published, service.outbox(up)) == (2, 0)
    assert len(commits) == 1  # one atomic commit with every file
    files = commits[0]["files"]
    assert commits[0]["path"].startswith("/api/datasets/org/results/commit/main")
    assert {"README.md", "leaderboard.parquet", "leaderboard.csv", "requests/votes_data.jsonl"} <= set(files)
    assert sum(p.startswith("results/") for p in files) == 2
    assert sum(p.startswith("details/") for p in files) == 2
    assert service.publish(up).published == 0 and len(commits) == 1  # nothing published twice
    # `results download` from the Hub target.
    assert service.download(up, "csv") == files["leaderboard.csv"]
    assert service.download(up, "parquet") == files["leaderboard.parquet"]
