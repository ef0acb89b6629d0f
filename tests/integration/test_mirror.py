"""Importing a requests dataset in the reference's layout: tolerant of its variants, idempotent."""

from __future__ import annotations

import json

from backend.domain import ModelType, Precision, Status

SHA = "0123456789abcdef0123456789abcdef01234567"


def write(folder, name, record):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def reference_record(**changes):
    record = {
        "model": "EleutherAI/pythia-160m",
        "base_model": "",
        "revision": SHA,
        "precision": "float16",
        "params": 0.213,
        "architectures": "GPTNeoXForCausalLM",
        "weight_type": "Original",
        "status": "FINISHED",
        "submitted_time": "2024-06-12T09:13:52Z",
        "model_type": "🟢 : 🟢 pretrained",
        "job_id": 1234,
        "job_start_time": "2024-06-12T10:00:00Z",
        "use_chat_template": False,
        "sender": "alice",
        "likes": 17,  # a field we do not store: ignored
        "private": False,
    }
    record.update(changes)
    return record


def test_import_reference_files_with_their_variants(app, tmp_path):
    folder = tmp_path / "requests"
    write(folder, "EleutherAI/pythia-160m_eval_request_False_float16_Original.json", reference_record())
    write(
        folder,
        "org/chat_eval_request_False_bfloat16_Original.json",
        reference_record(
            model="org/chat",
            status="RERUN",
            precision="torch.bfloat16",
            model_type="💬 chat models (RLHF, DPO, IFT, ...)",
            architectures=["LlamaForCausalLM"],
            job_id=-1,
        ),
    )
    write(folder, "org/broken.json", reference_record(model="org/x", revision="main"))
    write(folder, "org/status.json", reference_record(model="org/y", status="EXPLODED"))
    (folder / "org" / "garbage.json").write_text("{not json")
    (folder / "votes_data.jsonl").write_text(
        json.dumps(
            {"model": "org/chat", "revision": SHA, "username": "bob", "timestamp": "2024-06-13T00:00:00Z"}
        )
        + "\n"
        + json.dumps(
            {"model": "org/none", "revision": SHA, "username": "bob", "timestamp": "2024-06-13T00:00:00Z"}
        )
        + "\nnot json\n"
    )
    report = app.mirror.import_(folder, "importer")
    assert (report.requests_added, report.requests_skipped, report.votes_added) == (2, 0, 1)
    problems = "\n".join(report.problems)
    assert "org/broken.json: revision 'main' is not a full commit sha" in problems
    assert "org/status.json: status 'EXPLODED' is not known" in problems
    assert "org/garbage.json" in problems
    assert "no request for org/none" in problems and "votes_data.jsonl:3" in problems
    finished = app.queue.page(Status.FINISHED)[0]
    assert (finished.model, finished.sha, finished.precision, finished.model_type) == (
        "EleutherAI/pythia-160m",
        SHA,
        Precision.FLOAT16,
        ModelType.PRETRAINED,
    )
    assert finished.job_id == "1234" and finished.architectures == ("GPTNeoXForCausalLM",)
    pending = app.queue.page(Status.PENDING)[0]
    assert (pending.model, pending.precision, pending.model_type, pending.votes) == (
        "org/chat",
        Precision.BFLOAT16,
        ModelType.CHAT,
        1,
    )
    assert pending.job_id is None
    assert app.requests.history(pending.id)[0].reason == "imported from a requests mirror"

    again = app.mirror.import_(folder, "importer")
    assert (again.requests_added, again.requests_skipped, again.votes_added, again.votes_skipped) == (
        0,
        2,
        0,
        1,
    )
    assert len(app.requests.all()) == 2


def test_export_then_import_into_an_empty_database_reproduces_requests_and_votes(app, clock, tmp_path):
    from .conftest import new_request

    first = app.requests.create(new_request(model="org/a", sender="alice"), clock(), None)
    second = app.requests.create(new_request(model="org/b", sender="bob"), clock(), None)
    app.votes.vote(second.id, "carol")
    app.queue.claim("w")  # org/b: more votes
    app.queue.fail(second.id, "w", "corrupted weights", transient=False)
    exported = app.mirror.export(tmp_path / "out")
    assert exported == (2, 3)
    records = {
        json.loads(p.read_text())["model"]: json.loads(p.read_text())
        for p in (tmp_path / "out").rglob("*.json")
    }
    assert (
        records["org/b"]["status"] == "FAILED" and records["org/b"]["failure_reason"] == "corrupted weights"
    )
    assert records["org/a"]["status"] == "PENDING" and records["org/a"]["id"] == first.id
