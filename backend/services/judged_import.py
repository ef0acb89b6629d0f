"""`leaderboard judge import FOLDER`: AlpacaEval's published results as evaluations of a judged leaderboard,
so a leaderboard can start from them.

AlpacaEval keeps one folder per model, ``results/<model>/``, with ``model_outputs.json`` and, per annotator,
``<annotator>/annotations.json``. FOLDER is one such folder or the ``results/`` folder holding them. Each
model whose folder has the leaderboard's annotator's annotations becomes a FINISHED request of model id
``alpaca_eval/<model>`` (AlpacaEval's models are not all on the Hub) whose commit is the sha1 of its
annotations file, and one result, scored here from those annotations exactly as a run's are (never copied
from AlpacaEval's CSV). Importing the same file again imports nothing; a changed file is a new commit.

The files are copied under the work folder (they are the result's artifacts: publishing reads them there);
nothing in FOLDER is executed, and every file is read with a size limit and checked before anything is
stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.domain import ModelType, Precision, Status, WeightType
from backend.errors import AnnotationsInvalid, GlmTableInvalid, InvalidInput
from backend.judged.annotations import (
    MAX_FILE_BYTES,
    MAX_RECORDS,
    MAX_TEXT_CHARS,
    parse_annotations,
    read_limited,
)
from backend.judged.config import JudgedConfig
from backend.judged.glm import read_glm_table
from backend.judged.score import score
from backend.paths import inside
from backend.services.judged import judged_evaluation
from backend.storage.evaluations import EvaluationRepository
from backend.storage.requests import NewRequest, RequestRepository

log = logging.getLogger(__name__)

NAMESPACE = "alpaca_eval"
OUTPUTS = "model_outputs.json"
ANNOTATIONS = "annotations.json"
#: AlpacaEval's model folder names; they become the name part of a model id.
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")  # \Z: "$" lets a final newline through
MAX_MODELS = 5_000
IMPORTER = "judge-import"


@dataclass
class ImportReport:
    leaderboard: str
    imported: list[str] = field(default_factory=list)  # model ids
    already: list[str] = field(default_factory=list)  # imported before (same annotations file)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder name, why)

    def as_dict(self) -> dict[str, Any]:
        return {
            "leaderboard": self.leaderboard,
            "imported": self.imported,
            "already_imported": self.already,
            "skipped": [{"folder": name, "reason": why} for name, why in self.skipped],
        }


def model_folders(folder: Path, annotator: str) -> list[Path]:
    """The AlpacaEval model folders in ``folder``: itself when it is one, else its sub-folders."""
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder.name or folder} is not a folder: give AlpacaEval's results/ or results/<model>/"
        )
    if (folder / OUTPUTS).is_file() or (folder / annotator).is_dir():
        return [folder]
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    if len(found) > MAX_MODELS:
        raise InvalidInput(f"{folder.name} holds {len(found)} folders: import at most {MAX_MODELS} at once")
    return found


def _model_outputs(path: Path) -> bytes:
    """model_outputs.json's bytes, once checked: a list of records with string instruction and output."""
    source = f"{path.parent.name}/{path.name}"
    data = read_limited(path, MAX_FILE_BYTES)
    if data is None:
        raise AnnotationsInvalid(
            source, f"larger than {MAX_FILE_BYTES // 2**20} MiB", "import a smaller file"
        )
    try:
        records = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AnnotationsInvalid(
            source, "not JSON", "give AlpacaEval's model_outputs.json unchanged"
        ) from exc
    if not isinstance(records, list) or not 0 < len(records) <= MAX_RECORDS:
        raise AnnotationsInvalid(
            source, f"not a list of 1 to {MAX_RECORDS} records", "give model_outputs.json"
        )
    for index, record in enumerate(records):
        ok = isinstance(record, dict) and all(
            isinstance(record.get(key), str) and len(record[key]) <= MAX_TEXT_CHARS
            for key in ("instruction", "output")
        )
        if not ok:
            raise AnnotationsInvalid(
                source,
                f"record {index} lacks a string instruction or output (of at most {MAX_TEXT_CHARS} characters)",
                "give AlpacaEval's model_outputs.json unchanged",
            )
    return data


class JudgedImportService:
    def __init__(
        self,
        requests: RequestRepository,
        evaluations: EvaluationRepository,
        clock: Callable[[], datetime],
        work_dir: Path,
    ) -> None:
        self.requests = requests
        self.evaluations = evaluations
        self.clock = clock
        self.root = Path(work_dir).resolve() / "imports"

    def import_folder(self, config: JudgedConfig, folder: Path, glm_table: Path | None) -> ImportReport:
        report = ImportReport(config.name)
        for model_dir in model_folders(folder, config.judge.annotator):
            name = model_dir.name
            if not _MODEL.match(name):
                report.skipped.append(
                    (name[:100], "the folder name is not a model name (letters, digits, . _ -)")
                )
                continue
            annotations = model_dir / config.judge.annotator / ANNOTATIONS
            linked = [p for p in (annotations.parent, annotations, model_dir / OUTPUTS) if p.is_symlink()]
            if linked:
                # What is copied is published: nothing is read from outside the folder given.
                report.skipped.append(
                    (name, f"{linked[0].relative_to(model_dir)} is a link: copy the file itself into {name}/")
                )
                continue
            if not annotations.is_file():
                report.skipped.append(
                    (
                        name,
                        f"no {config.judge.annotator}/{ANNOTATIONS}: not judged by this leaderboard's annotator",
                    )
                )
                continue
            try:
                self._import_one(config, name, model_dir, annotations, glm_table, report)
            except (AnnotationsInvalid, GlmTableInvalid, InvalidInput) as exc:
                report.skipped.append((name, exc.message))
            except OSError as exc:  # unreadable (permissions, a vanished file): this model only
                why = exc.strerror or type(exc).__name__
                report.skipped.append(
                    (name, f"its files cannot be read ({why}): check them and import again")
                )
        return report

    def _import_one(
        self,
        config: JudgedConfig,
        name: str,
        model_dir: Path,
        annotations: Path,
        glm_table: Path | None,
        report: ImportReport,
    ) -> None:
        source = f"{name}/{config.judge.annotator}/{ANNOTATIONS}"
        data = read_limited(annotations, MAX_FILE_BYTES)
        if data is None:
            raise AnnotationsInvalid(
                source, f"larger than {MAX_FILE_BYTES // 2**20} MiB", "import a smaller file"
            )
        records = parse_annotations(data, source)  # the bytes hashed and kept: the file is read once
        if records.generator_1 != config.reference.generator:
            raise InvalidInput(
                f"{source} judges against {records.generator_1[:100]}, but {config.name}'s reference is "
                f"{config.reference.generator}: import it into a leaderboard with that reference"
            )
        if not _MODEL.match(records.generator_2):
            # It is the table's name column (page, API, published CSV): no formula, markup or control there.
            raise InvalidInput(
                f"{source}: generator_2 {records.generator_2[:100]!r} is not a model name (a letter or digit, "
                "then letters, digits, . _ -, at most 96): name the model as its results folder is named"
            )
        outputs = _model_outputs(model_dir / OUTPUTS) if (model_dir / OUTPUTS).is_file() else None
        model = f"{NAMESPACE}/{name}"
        sha = hashlib.sha1(data).hexdigest()  # the commit of an import: the annotations it scores
        for existing in self.requests.all_for_model(model, sha):
            if self.evaluations.get(existing.id, config.name) is not None:
                report.already.append(model)
                return
        # Scored before anything is stored: a request left RUNNING by a failed score would be released to
        # the queue and evaluated from the Hub as alpaca_eval/<name>, a repository anyone may create.
        table = read_glm_table(glm_table) if glm_table is not None else None
        results = score(records, table).as_dict()
        kept = inside(self.root, config.name, name, sha[:12])
        kept.mkdir(parents=True, exist_ok=True)
        (kept / ANNOTATIONS).write_bytes(data)
        if outputs is not None:
            (kept / OUTPUTS).write_bytes(outputs)
        now = self.clock()
        request = self.requests.create(
            NewRequest(
                model=model,
                revision=sha,
                sha=sha,
                precision=Precision.BFLOAT16,  # not known: AlpacaEval does not record it
                weight_type=WeightType.ORIGINAL,
                model_type=ModelType.CHAT,
                base_model=None,
                use_chat_template=True,
                params_b=None,
                architectures=(),
                license=None,
                sender=IMPORTER,
            ),
            now,
            None,
        )
        self.requests.transition(
            request.id,
            Status.RUNNING,
            actor=IMPORTER,
            reason=f"imported from AlpacaEval's results folder {name}",
            now=now,
            values={"worker_id": IMPORTER, "heartbeat_at": now, "started_at": now, "attempts": 1},
        )
        provenance = {
            "model": model,
            "model_sha": sha,
            "imported_from": f"AlpacaEval results/{name}",
            "precision_known": False,
            "use_chat_template": True,
            "limit": None,
            "annotations_file": str(kept / ANNOTATIONS),
            "model_outputs_file": str(kept / OUTPUTS) if outputs is not None else None,
            "judged": {
                "annotator": config.judge.annotator,
                "judge": f"as published by AlpacaEval ({config.judge.annotator})",
                "reference": records.generator_1,
                "generator": records.generator_2,
            },
        }
        evaluation = judged_evaluation(
            config,
            request.id,
            kept / ANNOTATIONS,
            glm_table,
            provenance,
            artifacts=str(kept),
            attempt=1,
            worker_id=IMPORTER,
            started_at=now,
            finished_at=now,
            results=results,
        )
        self.evaluations.store_and_finish(evaluation, now)
        report.imported.append(model)
        log.info("imported", extra={"leaderboard": config.name, "model": model})
