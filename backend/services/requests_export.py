"""Export and import of requests and votes in the reference's layout, so a public requests dataset can be
mirrored or imported: one JSON file per request under ``<org>/``, and votes as JSON lines.

Importing is idempotent (a request already imported, or a vote already cast, is skipped) and tolerant of
fields it does not use, but the files are untrusted: every field it uses is checked as a submission's is,
and a pending request passes the submission rules before it enters the queue. A request imported as RUNNING
comes in as PENDING: no worker of ours holds it. Export and publish write only records with valid ids, at
paths checked to stay inside their folder (backend.paths).
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.domain import (
    ModelType,
    Precision,
    Status,
    Submission,
    WeightType,
    is_repo_id,
    is_sha,
    parse_choice,
    preview,
    validate_repo_id,
)
from backend.errors import (
    AlreadySubmitted,
    InvalidInput,
    LeaderboardError,
    RequestsFileError,
    SubmissionRejected,
)
from backend.hub.repo_records import CLASS_NAME, CONTROL, MAX_ARCHITECTURES, MAX_LICENSE_CHARS
from backend.paths import inside_relative
from backend.services.submissions import check_user
from backend.storage.requests import NewRequest, RequestRepository
from backend.storage.votes import VoteRepository

log = logging.getLogger(__name__)

VOTES_FILE = "votes_data.jsonl"
MAX_REQUEST_FILE_BYTES = 1 << 20  # a request file of the reference is about 600 bytes
MAX_VOTES_FILE_BYTES = 256 << 20
MAX_VOTE_LINE_CHARS = 4096
MAX_REASON_CHARS = 4000
MAX_JOB_ID_CHARS = 64
# Control characters: never in a one-line field; a NUL in none (PostgreSQL cannot store one).
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
    problems: list[str] = field(default_factory=list)  # files or lines not imported, and why


def shown(name: str) -> str:
    """A file name from the import folder as a report shows it: characters that are not printable (a
    control character, a byte that is not UTF-8) escaped, so a name cannot garble the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def request_filename(model: str, precision: str, weight_type: str, sha: str, request_id: int) -> str:
    org, name = model.split("/", 1)
    return f"{org}/{name}_eval_request_False_{precision}_{weight_type}_{sha[:12]}_{request_id}.json"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, what: str) -> datetime:
    """An ISO-8601 time (UTC when it names no zone), in UTC: what the database stores."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise RequestsFileError(f"{what} is missing or not a time")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError as exc:
        raise RequestsFileError(f"{what} {preview(value)} is not an ISO-8601 time") from exc
    except OverflowError as exc:  # year 1 or 9999 moved across midnight by its zone
        raise RequestsFileError(f"{what} {preview(value)} is out of range once in UTC") from exc


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestsFileError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, or deep nesting
        raise RequestsFileError(
            f"not valid JSON ({type(exc).__name__}: nested or sized beyond what a parser accepts)"
        ) from exc


def _read_capped(path: Path, root: Path, limit: int) -> str:
    """A file of the import folder as UTF-8 text: a regular file inside the folder (no link out, checked
    on the file opened), at most ``limit`` bytes."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise RequestsFileError("a link that leaves the import folder: copy the file in instead")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise RequestsFileError(f"cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RequestsFileError("not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise RequestsFileError(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestsFileError(f"not UTF-8 text (byte {exc.start})") from exc


def _repo_id(value: Any, what: str) -> str:
    try:
        return validate_repo_id(value, what)
    except InvalidInput as exc:
        raise RequestsFileError(f"rule 'repo-id': {exc.message}") from exc


def _params(value: Any) -> float | None:
    """Billions of parameters: a finite, non-negative number; unknown when absent, null, "" or "?"."""
    if value in (None, "", "?"):
        return None
    number = math.inf
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300:
        number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise RequestsFileError(f"params {preview(value)} is not a finite, non-negative number (billions)")
    return number


def _architectures(value: Any) -> list[str]:
    """The reference writes "A,B" (or "?"); ours a list. Each a class name, as a model's config.json's."""
    if value in (None, "", "?"):
        return []
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or len(names) > MAX_ARCHITECTURES:
        raise RequestsFileError(
            f"architectures {preview(value)} is not a list of at most {MAX_ARCHITECTURES} names"
        )
    found = [n for n in names if n not in ("", "?")]
    if not all(isinstance(n, str) and CLASS_NAME.fullmatch(n) for n in found):
        raise RequestsFileError(f"architectures {preview(value)} holds something that is not a class name")
    return found


def _text(value: Any, what: str, limit: int, lines: bool = False) -> str | None:
    """A text of at most ``limit`` characters without control characters (``lines``: without a NUL, as a
    failure's reason quotes logs), or None when empty."""
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or len(value) > limit
        or "\0" in value
        or (not lines and CONTROL.search(value))
    ):
        kind = "text" if lines else "one-line text"
        raise RequestsFileError(
            f"{what} {preview(value)} is not a {kind} of at most {limit} characters without control "
            "characters"
        )
    return value


def _count(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise RequestsFileError(f"{what} {preview(value)} is not a whole number from 0 to 1000")
    return value


def _model_type(value: Any) -> ModelType:
    if not isinstance(value, str | None) or len(value or "") > 200:
        raise RequestsFileError(
            f"model_type {preview(value)} is not one of {', '.join(m.value for m in ModelType)}"
        )
    text = str(value or "").lower()
    for keyword, model_type in MODEL_TYPE_KEYWORDS:
        if keyword in text:
            return model_type
    raise RequestsFileError(f"model_type '{value}' is not one of {', '.join(m.value for m in ModelType)}")


def _choice(enum_type: Any, value: Any, what: str) -> Any:
    if not isinstance(value, str | None) or len(value or "") > 40:
        raise RequestsFileError(
            f"{what} {preview(value)} is not one of {', '.join(e.value for e in enum_type)}"
        )
    try:
        return parse_choice(enum_type, str(value or "").removeprefix("torch."), what)
    except InvalidInput as exc:
        raise RequestsFileError(exc.message) from exc


class RequestsExportService:
    def __init__(
        self,
        requests: RequestRepository,
        votes: VoteRepository,
        clock: Callable[[], datetime],
        validate: Callable[[Submission], NewRequest] | None = None,
    ) -> None:
        """``validate``: the submission rules an imported PENDING request must pass (None: such requests
        are refused)."""
        self.requests = requests
        self.votes = votes
        self.clock = clock
        self.validate = validate

    def export(self, folder: Path) -> tuple[int, int]:
        """Write every request and vote; returns (requests, votes) written."""
        files, counts = self.files()
        folder.mkdir(parents=True, exist_ok=True)
        paths = {relative: inside_relative(folder, relative) for relative in files}  # all checked first
        for relative, data in files.items():
            paths[relative].parent.mkdir(parents=True, exist_ok=True)
            paths[relative].write_bytes(data)
        return counts

    def files(self) -> tuple[dict[str, bytes], tuple[int, int]]:
        """The export in memory: (relative path -> content, (requests, votes)); what `export` writes and
        what a publish puts under requests/."""
        files: dict[str, bytes] = {}
        by_id = {}
        for request in self.requests.all():
            if not (is_repo_id(request.model) and is_sha(request.sha)):  # data an older version let in
                log.warning(
                    "request with an invalid model id or sha not exported", extra={"request_id": request.id}
                )
                continue
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
            if vote.request_id not in by_id:
                continue
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
        """Read a requests folder into the database; safe to run again on the same folder.

        Every record is checked as a submission is: ids by the repo-id and sha rules, the sender by the user
        rule, every field against its type and size. A PENDING record (or one the reference left running)
        passes every submission rule against the model source before it enters the queue, except the
        rate limit (it was submitted in the past); the model's size, architectures and license come from
        the repository then, not from the file. A record that fails is a problem in the report, naming the
        file and the rule; the others are imported."""
        if not folder.is_dir():
            raise RequestsFileError(
                "the import folder is not a folder: give the folder an export (or the requests dataset) is in"
            )
        root = folder.resolve()
        report = ImportReport()
        for path in sorted(p for p in folder.rglob("*.json") if p.is_file() or p.is_symlink()):
            name = shown(path.relative_to(folder).as_posix())
            try:
                values = self._read_request(_read_capped(path, root, MAX_REQUEST_FILE_BYTES))
                if values["status"] == Status.PENDING.value:
                    values = self._validated(values)
            except AlreadySubmitted:
                report.requests_skipped += 1
                continue
            except SubmissionRejected as exc:
                report.problems.append(
                    f"{name}: not imported, rule '{exc.rule}': {exc.problem}. Fix: {exc.fix}"
                )
                continue
            except RequestsFileError as exc:
                report.problems.append(f"{name}: {exc}")
                continue
            except LeaderboardError as exc:  # the model source cannot answer now
                report.problems.append(f"{name}: not imported: {exc.message}; run the import again")
                continue
            known = self.requests.find_imported(
                values["model"], values["sha"], values["precision"], values["submitted_at"]
            )
            try:
                added = (
                    known is None and self.requests.insert_imported(values, actor, self.clock()) is not None
                )
            except InvalidInput as exc:  # a value the checks let through that the database cannot hold
                report.problems.append(f"{name}: not imported: {exc.message}")
                continue
            if added:
                report.requests_added += 1
            else:
                report.requests_skipped += 1
        votes_path = folder / VOTES_FILE
        if votes_path.is_file() or votes_path.is_symlink():
            self._import_votes(votes_path, root, report)
        return report

    def _validated(self, values: dict[str, Any]) -> dict[str, Any]:
        """A pending record as the submission rules accept it (SubmissionRejected when they do not)."""
        if self.validate is None:
            raise RequestsFileError(
                "a PENDING request cannot be imported here: no model source to validate it"
            )
        new = self.validate(
            Submission(
                model=values["model"],
                sender=values["sender"],
                revision=values["sha"],
                precision=Precision(values["precision"]),
                weight_type=WeightType(values["weight_type"]),
                model_type=ModelType(values["model_type"]),
                base_model=values["base_model"],
                use_chat_template=values["use_chat_template"],
            )
        )
        return {
            **values,
            "params_b": new.params_b,
            "architectures": list(new.architectures),
            "license": new.license,
            "use_chat_template": new.use_chat_template,
        }

    def _read_request(self, text: str) -> dict[str, Any]:
        data = _parse_json(text)
        if not isinstance(data, dict):
            raise RequestsFileError("not a JSON object")
        model = _repo_id(data.get("model"), "model")
        base_model = data.get("base_model") or None
        if base_model is not None:
            base_model = _repo_id(base_model, "base_model")
        revision = data.get("revision")
        if not is_sha(revision):
            raise RequestsFileError(f"revision {preview(revision)} is not a full commit sha")
        status = STATUS_ALIASES.get(str(data.get("status", ""))[:40].upper())
        if status is None:
            raise RequestsFileError(f"status {preview(data.get('status'))} is not known")
        submitted_at = _parse_time(data.get("submitted_time"), "submitted_time")
        sender = data.get("sender") or "unknown"
        try:
            sender = check_user(sender if isinstance(sender, str) else "")
        except InvalidInput as exc:
            raise RequestsFileError(f"sender {preview(data.get('sender'))}: {exc.message}") from exc
        job_id = data.get("job_id")
        if job_id in (None, -1, "-1", ""):
            job_id = None
        elif (
            isinstance(job_id, bool)
            or not isinstance(job_id, str | int)
            or len(str(job_id)) > MAX_JOB_ID_CHARS
            or CONTROL.search(str(job_id))
        ):
            raise RequestsFileError(
                f"job_id {preview(job_id)} is not a job id of at most {MAX_JOB_ID_CHARS} characters"
            )
        use_chat_template = data.get("use_chat_template", False)
        if not isinstance(use_chat_template, bool):
            raise RequestsFileError(f"use_chat_template {preview(use_chat_template)} is not true or false")
        return {
            "model": model,
            "revision": revision,
            "sha": revision,
            "precision": _choice(Precision, data.get("precision"), "precision").value,
            "weight_type": _choice(WeightType, data.get("weight_type") or "Original", "weight_type").value,
            "model_type": _model_type(data.get("model_type")).value,
            "base_model": base_model,
            "use_chat_template": use_chat_template,
            "params_b": _params(data.get("params")),
            "architectures": _architectures(data.get("architectures")),
            "license": _text(data.get("license"), "license", MAX_LICENSE_CHARS),
            "sender": sender,
            "status": status.value,
            "votes": 0,
            "attempts": _count(data.get("attempts"), "attempts"),
            "submitted_at": submitted_at,
            "updated_at": submitted_at,
            "job_id": None if job_id is None else str(job_id),
            "failure_reason": _text(
                data.get("failure_reason"), "failure_reason", MAX_REASON_CHARS, lines=True
            )
            if status is Status.FAILED
            else None,
        }

    def _import_votes(self, path: Path, root: Path, report: ImportReport) -> None:
        try:
            text = _read_capped(path, root, MAX_VOTES_FILE_BYTES)
        except RequestsFileError as exc:
            report.problems.append(f"{VOTES_FILE}: {exc}")
            return
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                if len(line) > MAX_VOTE_LINE_CHARS:
                    raise RequestsFileError(f"longer than {MAX_VOTE_LINE_CHARS} characters")
                vote = _parse_json(line)
                if not isinstance(vote, dict):
                    raise RequestsFileError("not a JSON object")
                model = _repo_id(vote.get("model"), "model")
                sha = vote.get("revision")
                if not is_sha(sha):
                    raise RequestsFileError(f"revision {preview(sha)} is not a full commit sha")
                username = vote.get("username")
                try:
                    user = check_user(username if isinstance(username, str) else "")
                except InvalidInput as exc:
                    raise RequestsFileError(f"username {preview(username)}: {exc.message}") from exc
                at = _parse_time(vote.get("timestamp"), "timestamp")
            except RequestsFileError as exc:
                report.problems.append(f"{VOTES_FILE}:{number}: {exc}")
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
