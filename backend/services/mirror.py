"""Export and import of requests and votes in the reference's layout, so a public requests dataset can be
mirrored or imported: one JSON file per request under ``<org>/``, and votes as JSON lines.

Importing is idempotent (a request already imported, or a vote already cast, is skipped) and tolerant of
fields it does not know. A request imported as RUNNING comes in as PENDING: no worker of ours holds it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.domain import SHA_RE, ModelType, Precision, Status, WeightType, parse_choice
from backend.errors import InvalidInput, MirrorFormatError
from backend.storage.requests import RequestRepository
from backend.storage.votes import VoteRepository

log = logging.getLogger(__name__)

VOTES_FILE = "votes_data.jsonl"
# Statuses of the reference and of its forks, as they map onto ours.
STATUS_ALIASES = {
    "PENDING": Status.PENDING,
    "RERUN": Status.PENDING,
    "PENDING_NEW_EVAL": Status.PENDING,
    "RUNNING": Status.PENDING,
    "EVALUATING": Status.PENDING,
    "FINISHED": Status.FINISHED,
    "FINISHED_EVAL": Status.FINISHED,
    "FAILED": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
}
# The reference stored model types with emoji and long labels ("🔶 : 🔶 fine-tuned on domain-specific datasets").
MODEL_TYPE_KEYWORDS = [
    ("merge", ModelType.MERGE),
    ("chat", ModelType.CHAT),
    ("instruction", ModelType.CHAT),
    ("continuously", ModelType.CONTINUOUSLY_PRETRAINED),
    ("fine-tuned", ModelType.FINE_TUNED),
    ("fine tuned", ModelType.FINE_TUNED),
    ("finetuned", ModelType.FINE_TUNED),
    ("pretrained", ModelType.PRETRAINED),
    ("pre-trained", ModelType.PRETRAINED),
]


@dataclass
class ImportReport:
    requests_added: int = 0
    requests_skipped: int = 0  # already there, or a duplicate of an active request
    votes_added: int = 0
    votes_skipped: int = 0
    problems: list[str] = field(default_factory=list)  # files or lines that could not be read


def request_filename(model: str, precision: str, weight_type: str, sha: str, request_id: int) -> str:
    org, name = model.split("/", 1)
    return f"{org}/{name}_eval_request_False_{precision}_{weight_type}_{sha[:12]}_{request_id}.json"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise MirrorFormatError(f"{what} is missing or not a string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise MirrorFormatError(f"{what} '{value}' is not an ISO-8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _model_type(value: Any) -> ModelType:
    text = str(value or "").lower()
    for keyword, model_type in MODEL_TYPE_KEYWORDS:
        if keyword in text:
            return model_type
    raise MirrorFormatError(f"model_type '{value}' is not one of {', '.join(m.value for m in ModelType)}")


def _choice(enum_type: Any, value: Any, what: str) -> Any:
    try:
        return parse_choice(enum_type, str(value or "").removeprefix("torch."), what)
    except InvalidInput as exc:
        raise MirrorFormatError(exc.message) from exc


class MirrorService:
    def __init__(
        self, requests: RequestRepository, votes: VoteRepository, clock: Callable[[], datetime]
    ) -> None:
        self.requests = requests
        self.votes = votes
        self.clock = clock

    def export(self, folder: Path) -> tuple[int, int]:
        """Write every request and vote; returns (requests, votes) written."""
        files, counts = self.files()
        for relative, data in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        folder.mkdir(parents=True, exist_ok=True)
        return counts

    def files(self) -> tuple[dict[str, bytes], tuple[int, int]]:
        """The mirror in memory: (relative path -> content, (requests, votes)); what `export` writes and
        what a publish puts under requests/."""
        files: dict[str, bytes] = {}
        by_id = {}
        for request in self.requests.all():
            by_id[request.id] = request
            record = {
                "model": request.model,
                "base_model": request.base_model or "",
                "revision": request.sha,
                "precision": request.precision.value,
                "params": request.params_b,
                "architectures": ",".join(request.architectures) or "?",
                "weight_type": request.weight_type.value,
                "status": request.status.value,
                "submitted_time": _iso(request.submitted_at),
                "model_type": request.model_type.value,
                "job_id": request.job_id if request.job_id is not None else -1,
                "job_start_time": _iso(request.started_at),
                "use_chat_template": request.use_chat_template,
                "sender": request.sender,
                # Ours, beyond the reference's fields:
                "id": request.id,
                "license": request.license,
                "votes": request.votes,
                "attempts": request.attempts,
                "failure_reason": request.failure_reason,
            }
            path = request_filename(
                request.model, request.precision.value, request.weight_type.value, request.sha, request.id
            )
            files[str(path)] = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        lines = []
        for vote in self.votes.all_votes():
            request = by_id[vote.request_id]
            lines.append(
                json.dumps(
                    {
                        "model": request.model,
                        "revision": request.sha,
                        "precision": request.precision.value,
                        "username": vote.user,
                        "timestamp": _iso(vote.at),
                    },
                    ensure_ascii=False,
                )
            )
        files[VOTES_FILE] = "".join(line + "\n" for line in lines).encode("utf-8")
        return files, (len(by_id), len(lines))

    def import_(self, folder: Path, actor: str) -> ImportReport:
        """Read a mirror folder into the database; safe to run again on the same folder."""
        if not folder.is_dir():
            raise MirrorFormatError(
                f"{folder} is not a folder: give the folder an export (or the requests dataset) is in"
            )
        report = ImportReport()
        for path in sorted(p for p in folder.rglob("*.json") if p.is_file()):
            try:
                values = self._read_request(path)
            except (MirrorFormatError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                report.problems.append(f"{path.relative_to(folder)}: {exc}")
                continue
            known = self.requests.find_imported(
                values["model"], values["sha"], values["precision"], values["submitted_at"]
            )
            if known is not None or self.requests.insert_imported(values, actor, self.clock()) is None:
                report.requests_skipped += 1
            else:
                report.requests_added += 1
        votes_path = folder / VOTES_FILE
        if votes_path.is_file():
            self._import_votes(votes_path, report)
        return report

    def _read_request(self, path: Path) -> dict[str, Any]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise MirrorFormatError("not a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or "/" not in model:
            raise MirrorFormatError(f"model '{model}' is not ORG/NAME")
        revision = str(data.get("revision") or "")
        if not SHA_RE.match(revision):
            raise MirrorFormatError(f"revision '{revision}' is not a full commit sha")
        status = STATUS_ALIASES.get(str(data.get("status", "")).upper())
        if status is None:
            raise MirrorFormatError(f"status '{data.get('status')}' is not known")
        submitted_at = _parse_time(data.get("submitted_time"), "submitted_time")
        architectures = data.get("architectures") or []
        if isinstance(architectures, str):
            architectures = [a for a in architectures.split(",") if a and a != "?"]
        params = data.get("params")
        job_id = data.get("job_id")
        return {
            "model": model,
            "revision": revision,
            "sha": revision,
            "precision": _choice(Precision, data.get("precision"), "precision").value,
            "weight_type": _choice(WeightType, data.get("weight_type") or "Original", "weight_type").value,
            "model_type": _model_type(data.get("model_type")).value,
            "base_model": data.get("base_model") or None,
            "use_chat_template": bool(data.get("use_chat_template", False)),
            "params_b": float(params)
            if isinstance(params, int | float) and not isinstance(params, bool)
            else None,
            "architectures": [str(a) for a in architectures],
            "license": data.get("license") if isinstance(data.get("license"), str) else None,
            "sender": str(data.get("sender") or "unknown"),
            "status": status.value,
            "votes": 0,
            "attempts": int(data.get("attempts") or 0),
            "submitted_at": submitted_at,
            "updated_at": submitted_at,
            "job_id": None if job_id in (None, -1, "-1", "") else str(job_id),
            "failure_reason": data.get("failure_reason") if status is Status.FAILED else None,
        }

    def _import_votes(self, path: Path, report: ImportReport) -> None:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    vote = json.loads(line)
                    model, sha, user = vote["model"], vote["revision"], vote["username"]
                    at = _parse_time(vote.get("timestamp"), "timestamp")
                except (json.JSONDecodeError, KeyError, TypeError, MirrorFormatError) as exc:
                    report.problems.append(f"{VOTES_FILE}:{number}: {exc!r}")
                    continue
                candidates = [
                    r
                    for r in self.requests.all_for_model(model, sha)
                    if vote.get("precision") in (None, r.precision.value)
                ]
                if not candidates:
                    report.problems.append(f"{VOTES_FILE}:{number}: no request for {model} at {sha}")
                    continue
                if self.votes.insert_imported(candidates[-1].id, str(user), at):
                    report.votes_added += 1
                else:
                    report.votes_skipped += 1
