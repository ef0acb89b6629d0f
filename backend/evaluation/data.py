"""The local data mirror: every benchmark's data in a folder, so runs never need the Hub.

Layout::

    <mirror>/MANIFEST.json                                   what each file is (see below)
    <mirror>/<dataset repo>/<config or "default">/<split>.parquet
    <mirror>/nltk_data/tokenizers/punkt_tab/english/         the sentence splitter IFEval scores with

``MANIFEST.json`` records, per file, the repository, config and split, its source (``hub`` or
``synthetic``), the dataset revision (the commit sha read from the Hub, or ``synthetic-<content hash>``),
the row count and the file's sha256. A mirror is built on a machine with Hub access by
``mirror_from_hub`` (``leaderboard data mirror``); ``synthesize`` (``leaderboard data synthesize``) writes
small made-up data in the real datasets' schemas for tests and demos. Either way the run's task files
(``tasks.materialize``) read the parquet files and compute exactly what they compute on Hub data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backend.errors import LeaderboardError
from backend.evaluation.tasks import (
    TaskSet,
    harness_tasks_folder,
    load_task_set,
    read_task_file,
    write_revisions,
)

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "leaderboard-data-mirror/1"
NLTK_FOLDER = "nltk_data"
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


class MirrorError(LeaderboardError):
    """The data mirror is missing files or damaged: rebuild it with `leaderboard data mirror` (or
    `leaderboard data synthesize` for test data)."""

    http_status = 500
    code = "data_mirror"


class DatasetSourceError(LeaderboardError):
    """The Hub could not give a dataset: check the repository id, your token and the dataset's terms, then
    try again."""

    http_status = 503
    code = "dataset_source_unavailable"


# ----------------------------------------------------------------------------------------------- layout


def mirror_file(mirror: Path, repo: str, config: str | None, split: str) -> Path:
    """Where the mirror keeps one split of one dataset config."""
    return Path(mirror) / repo / (config or "default") / f"{split}.parquet"


def nltk_data_dir(mirror: Path) -> Path:
    """The folder to set as NLTK_DATA for runs over this mirror."""
    return Path(mirror) / NLTK_FOLDER


def read_manifest(mirror: Path) -> dict[str, Any]:
    path = Path(mirror) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MirrorError(
            f"{mirror} is not a data mirror (no {MANIFEST}): build one with `leaderboard data mirror`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise MirrorError(f"{path} is unreadable ({exc}): rebuild the mirror") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise MirrorError(f"{path} is not a {MANIFEST_FORMAT} manifest: rebuild the mirror")
    return manifest


def dataset_revisions(mirror: Path) -> dict[str, str]:
    """Dataset repository -> the revision its files in the mirror were taken at (for results provenance)."""
    revisions: dict[str, str] = {}
    for name, entry in read_manifest(mirror)["files"].items():
        repo, revision = entry["repo"], entry["revision"]
        if revisions.setdefault(repo, revision) != revision:
            raise MirrorError(
                f"{mirror}: files of {repo} come from two revisions ({revisions[repo]}, {revision} for "
                f"{name}): rebuild the mirror"
            )
    return revisions


def check_mirror(mirror: Path, task_set: TaskSet, *, checksums: bool = False) -> None:
    """Refuse a mirror that lacks a file the task set reads (and, with checksums, one whose bytes changed)."""
    files = read_manifest(mirror)["files"]
    problems = []
    for repo, config, split in task_set.data_files():
        path = mirror_file(mirror, repo, config, split)
        name = path.relative_to(mirror).as_posix()
        if name not in files:
            problems.append(f"{name} is not in {MANIFEST}")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif checksums and _sha256(path) != files[name]["sha256"]:
            problems.append(f"{name} does not match its sha256 in {MANIFEST}")
    if problems:
        raise MirrorError(
            f"the data mirror {mirror} cannot serve task set {task_set.name}: {'; '.join(problems)}. "
            "Rebuild it with `leaderboard data mirror` (or `leaderboard data synthesize` for test data)"
        )


def verify_mirror(mirror: Path, task_set: TaskSet | None = None) -> None:
    """Check every file of the task set against the sha256 the manifest recorded."""
    check_mirror(mirror, task_set or load_task_set(), checksums=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(
    mirror: Path,
    task_set: TaskSet,
    rows: Mapping[tuple[str, str | None, str], int],
    revisions: Mapping[str, str],
    source: str,
    punkt: str,
) -> Path:
    entries = {}
    for (repo, config, split), count in rows.items():
        path = mirror_file(mirror, repo, config, split)
        entries[path.relative_to(mirror).as_posix()] = {
            "repo": repo,
            "config": config,
            "split": split,
            "source": source,
            "revision": revisions[repo],
            "rows": count,
            "sha256": _sha256(path),
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "task_set": task_set.name,
        "nltk_data": {"path": NLTK_FOLDER, "punkt_tab": punkt},
        "files": dict(sorted(entries.items())),
    }
    path = mirror / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ NLTK


_PUNKT_VOCABULARY_TEXT = """
the quick brown fox jumps over lazy dog while old farmer watches from porch of his house a language
model reads question thinks about answer step by and then writes short reply students in library were
reading books history physics chemistry biology mathematics if train leaves station at nine travels
sixty miles per hour when does it arrive committee decided that every member should vote before end
month most them did water boils one hundred degrees sea level but lower temperature on high mountain she
opened window looked rain falling garden stay inside write city council approved new budget for schools
roads parks hospitals
"""
_PUNKT_VOCABULARY = tuple(_PUNKT_VOCABULARY_TEXT.split())
_PUNKT_NAMES = ("Smith", "Jones", "Brown", "Lee", "Miller", "Garcia", "Chen", "Novak")
_PUNKT_ABBREVIATIONS = ("Dr.", "Mr.", "Mrs.", "Prof.", "St.", "Gen.", "Capt.", "Mt.")


def _punkt_training_text() -> str:
    """Made-up English: ordinary words in every position, titles before names, "e.g." mid-sentence."""
    rng = random.Random(0)
    sentences = []
    for _ in range(4000):
        words = [rng.choice(_PUNKT_VOCABULARY) for _ in range(rng.randrange(5, 14))]
        if rng.random() < 0.3:
            at = rng.randrange(1, len(words))
            words[at:at] = [rng.choice(_PUNKT_ABBREVIATIONS), rng.choice(_PUNKT_NAMES)]
        if rng.random() < 0.1:
            at = rng.randrange(1, len(words))
            words[at:at] = ["e.g.", rng.choice(_PUNKT_VOCABULARY)]
        if rng.random() < 0.1:
            words.insert(len(words) - 1, rng.choice(_PUNKT_NAMES))
        text = " ".join(words)
        sentences.append(text[0].upper() + text[1:] + rng.choice(".....?!"))
    return " ".join(sentences)


@functools.cache
def _train_punkt() -> dict[str, str]:
    """A Punkt model trained with nltk's own trainer on local text: file name -> content."""
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    trainer.train(_punkt_training_text(), finalize=True)
    params = trainer.get_params()
    return {
        "collocations.tab": "\n".join(sorted("\t".join(pair) for pair in params.collocations)),
        "sent_starters.txt": "\n".join(sorted(params.sent_starters)),
        "abbrev_types.txt": "\n".join(sorted(params.abbrev_types)),
        "ortho_context.tab": "\n".join(
            f"{word}\t{flags}" for word, flags in sorted(params.ortho_context.items())
        ),
    }


def prepare_nltk_data(mirror: Path, *, download: bool = False) -> str:
    """Put NLTK's English punkt_tab model under ``<mirror>/nltk_data``; return how it was obtained.

    IFEval scoring splits sentences with it and lm-eval would otherwise try to download it. With
    ``download`` the official model is fetched (``nltk.download``); otherwise, or if that fails, a model
    is trained locally with nltk's Punkt trainer ("trained-locally"), which splits ordinary English
    text the same way but is not byte-identical to the official one.
    """
    target = nltk_data_dir(mirror) / "tokenizers" / "punkt_tab" / "english"
    if download:
        import nltk

        try:
            if nltk.download(
                "punkt_tab", download_dir=str(nltk_data_dir(mirror)), quiet=True, raise_on_error=True
            ):
                return "nltk-download"
        except Exception as exc:  # nltk raises many kinds; the fallback below is logged
            log.warning("could not download punkt_tab (%s): training a Punkt model locally", exc)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in _train_punkt().items():
        (target / name).write_text(content, encoding="utf-8", newline="")
    return "trained-locally"


def use_nltk_data(mirror: Path) -> Path:
    """Make this process find the mirror's NLTK data (also when nltk is already imported); return it."""
    folder = nltk_data_dir(mirror).resolve()
    paths = [str(folder), *(p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p)]
    os.environ["NLTK_DATA"] = os.pathsep.join(dict.fromkeys(paths))
    if "nltk.data" in sys.modules:
        nltk_path = sys.modules["nltk.data"].path
        if str(folder) not in nltk_path:
            nltk_path.insert(0, str(folder))
    return folder


# ----------------------------------------------------------------------------------- synthetic datasets


Rng = random.Random
Synthesizer = Callable[[str | None, str, Rng, int], pa.Table]
_WORDS_TEXT = """
river mountain garden window library teacher student market village engine planet museum doctor winter
summer forest castle bridge letter signal harbor island kitchen lantern
"""
_WORDS = tuple(_WORDS_TEXT.split())


def _sentence(rng: Rng, words: int = 8) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _bbh(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    choices = _bbh_choices()[config or ""]
    inputs, targets = [], []
    for i in range(rows):
        target = rng.choice(choices)
        if all(c.startswith("(") for c in choices):
            options = "\n".join(f"{c} {_sentence(rng, 3)[:-1]}" for c in choices)
            inputs.append(
                f"Question {i} about the {rng.choice(_WORDS)}: {_sentence(rng)}\nOptions:\n{options}"
            )
        else:
            inputs.append(f"{_sentence(rng, 10)} Answer with one of: {', '.join(choices)}.")
        targets.append(target)
    return pa.table({"input": pa.array(inputs, pa.string()), "target": pa.array(targets, pa.string())})


_BBH_CHOICES: dict[str, list[str]] = {}


def _bbh_choices() -> dict[str, list[str]]:
    """Each BBH subtask's answer options, read from the installed task files (targets must be one)."""
    if not _BBH_CHOICES:
        root = harness_tasks_folder() / "leaderboard" / "bbh_mc"
        for path in sorted(root.glob("*.yaml")):
            config = read_task_file(path)
            if "dataset_name" in config and isinstance(config.get("doc_to_choice"), list):
                _BBH_CHOICES[config["dataset_name"]] = [str(c) for c in config["doc_to_choice"]]
    return _BBH_CHOICES


_MMLU_PRO_CATEGORY_TEXT = "math physics chemistry law engineering other economics health psychology business"
_MMLU_PRO_CATEGORIES = (
    *_MMLU_PRO_CATEGORY_TEXT.split(),
    "biology",
    "philosophy",
    "history",
    "computer science",
)


_MMLU_PRO_SCHEMA = pa.schema(
    [
        ("question_id", pa.int64()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("answer_index", pa.int64()),
        ("cot_content", pa.string()),
        ("category", pa.string()),
        ("src", pa.string()),
    ]
)


def _mmlu_pro(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    rows = max(rows, 5) if split == "validation" else rows  # 5-shot reads the first five
    columns: dict[str, list[Any]] = {name: [] for name in _MMLU_PRO_SCHEMA.names}
    base = 70 if split == "validation" else 1000
    for i in range(rows):
        count = rng.choice((10, 10, 10, 9, 4))
        index = rng.randrange(count)
        letter = string.ascii_uppercase[index]
        category = rng.choice(_MMLU_PRO_CATEGORIES)
        columns["question_id"].append(base + i)
        columns["question"].append(
            f"Which statement about the {rng.choice(_WORDS)} is correct? {_sentence(rng)}"
        )
        columns["options"].append([_sentence(rng, 4) for _ in range(count)])
        columns["answer"].append(letter)
        columns["answer_index"].append(index)
        columns["cot_content"].append(
            f"A: Let's think step by step. {_sentence(rng)} The answer is ({letter})."
            if split == "validation"
            else ""
        )
        columns["category"].append(category)
        columns["src"].append(f"ori_mmlu-{category.replace(' ', '_')}")
    return pa.table(columns, schema=_MMLU_PRO_SCHEMA)


#: The GPQA CSV columns lm-eval and the leaderboard read, and the documented ones around them. The real
#: files carry further per-validator columns (…_EV_1, …_NEV_1); a Hub mirror keeps them all.
_GPQA_COLUMNS = [
    ("Pre-Revision Question", pa.string()),
    ("Pre-Revision Correct Answer", pa.string()),
    ("Pre-Revision Incorrect Answer 1", pa.string()),
    ("Pre-Revision Incorrect Answer 2", pa.string()),
    ("Pre-Revision Incorrect Answer 3", pa.string()),
    ("Pre-Revision Explanation", pa.string()),
    ("Self-reported question-writing time (minutes)", pa.float64()),
    ("Question", pa.string()),
    ("Correct Answer", pa.string()),
    ("Incorrect Answer 1", pa.string()),
    ("Incorrect Answer 2", pa.string()),
    ("Incorrect Answer 3", pa.string()),
    ("Explanation", pa.string()),
    ("Revision Comments (from Question Writer)", pa.string()),
    ("Subdomain", pa.string()),
    ("Writer's Difficulty Estimate", pa.string()),
    ("Extra Revised Question", pa.string()),
    ("Extra Revised Explanation", pa.string()),
    ("Extra Revised Correct Answer", pa.string()),
    ("Extra Revised Incorrect Answer 1", pa.string()),
    ("Extra Revised Incorrect Answer 2", pa.string()),
    ("Extra Revised Incorrect Answer 3", pa.string()),
    ("Non-Expert Validator Accuracy", pa.float64()),
    ("Majority Non-Expert Vals Incorrect", pa.float64()),
    ("Expert Validator Accuracy", pa.float64()),
    ("Record ID", pa.string()),
    ("High-level domain", pa.string()),
]


def _gpqa(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    records = []
    for i in range(rows):
        domain = rng.choice(("Physics", "Chemistry", "Biology"))
        answers = [f"{_sentence(rng, 3)[:-1]} [{n}]" for n in range(4)]  # lm-eval strips the brackets
        record: dict[str, Any] = {name: None for name, _ in _GPQA_COLUMNS}
        record.update(
            {
                "Question": f"In {domain.lower()}, {_sentence(rng, 10).lower()[:-1]}?",
                "Correct Answer": answers[0],
                "Incorrect Answer 1": answers[1],
                "Incorrect Answer 2": answers[2],
                "Incorrect Answer 3": answers[3],
                "Explanation": _sentence(rng),
                "Subdomain": f"{domain} (general)",
                "Writer's Difficulty Estimate": "Hard graduate level",
                "Self-reported question-writing time (minutes)": float(rng.randrange(10, 90)),
                "Non-Expert Validator Accuracy": rng.choice((0.0, 0.5, 1.0)),
                "Majority Non-Expert Vals Incorrect": rng.choice((0.0, 1.0)),
                "Expert Validator Accuracy": rng.choice((0.5, 1.0)),
                "Record ID": f"rec{config}{i:05d}",
                "High-level domain": domain,
            }
        )
        for key in (
            "Question",
            "Correct Answer",
            "Incorrect Answer 1",
            "Incorrect Answer 2",
            "Incorrect Answer 3",
            "Explanation",
        ):
            record[f"Pre-Revision {key}"] = record[key]
        records.append(record)
    return pa.Table.from_pylist(records, schema=pa.schema(_GPQA_COLUMNS))


#: google/IFEval's kwargs struct: one field per instruction parameter, null where unused.
_IFEVAL_KWARGS = pa.struct(
    [
        ("num_highlights", pa.int64()),
        ("relation", pa.string()),
        ("num_words", pa.int64()),
        ("num_placeholders", pa.int64()),
        ("prompt_to_repeat", pa.string()),
        ("num_bullets", pa.int64()),
        ("section_spliter", pa.string()),
        ("num_sections", pa.int64()),
        ("capital_relation", pa.string()),
        ("capital_frequency", pa.int64()),
        ("keywords", pa.list_(pa.string())),
        ("num_paragraphs", pa.int64()),
        ("language", pa.string()),
        ("let_relation", pa.string()),
        ("letter", pa.string()),
        ("let_frequency", pa.int64()),
        ("end_phrase", pa.string()),
        ("forbidden_words", pa.list_(pa.string())),
        ("keyword", pa.string()),
        ("frequency", pa.int64()),
        ("num_sentences", pa.int64()),
        ("postscript_marker", pa.string()),
        ("first_word", pa.string()),
        ("nth_paragraph", pa.int64()),
    ]
)

_RELATIONS = ("less than", "at least")


def _ifeval_instruction(instruction: str, rng: Rng) -> tuple[str, dict[str, Any]]:
    """An instruction's sentence for the prompt and its kwargs (the parameters its checker takes)."""
    if instruction == "punctuation:no_comma":
        return "Do not use any commas in your response.", {}
    if instruction == "detectable_format:title":
        return "Give your answer a title wrapped in double angular brackets, like <<title>>.", {}
    if instruction == "change_case:english_lowercase":
        return "Your entire response should be in English and in lowercase letters only.", {}
    if instruction == "keywords:existence":
        keywords = rng.sample(_WORDS, 2)
        return f"Include the keywords {', '.join(keywords)} in the response.", {"keywords": keywords}
    if instruction == "keywords:forbidden_words":
        words = rng.sample(_WORDS, 2)
        return f"Do not include the words {', '.join(words)}.", {"forbidden_words": words}
    if instruction == "length_constraints:number_words":
        count, relation = rng.choice((20, 50, 100)), rng.choice(_RELATIONS)
        return f"Answer with {relation} {count} words.", {"num_words": count, "relation": relation}
    if instruction == "length_constraints:number_sentences":
        count, relation = rng.choice((2, 3, 5)), rng.choice(_RELATIONS)
        return f"Your response should contain {relation} {count} sentences.", {
            "num_sentences": count,
            "relation": relation,
        }
    if instruction == "change_case:capital_word_frequency":
        count, relation = rng.choice((1, 3)), rng.choice(_RELATIONS)
        return f"Use words in all capital letters {relation} {count} times.", {
            "capital_frequency": count,
            "capital_relation": relation,
        }
    if instruction == "keywords:letter_frequency":
        letter, count, relation = rng.choice("aeiou"), rng.choice((2, 5)), rng.choice(_RELATIONS)
        return f"The letter {letter} should appear {relation} {count} times.", {
            "letter": letter,
            "let_frequency": count,
            "let_relation": relation,
        }
    if instruction == "detectable_format:number_bullet_lists":
        count = rng.choice((2, 3))
        return f"Your answer must contain exactly {count} bullet points in markdown.", {"num_bullets": count}
    if instruction == "detectable_content:postscript":
        return "At the end of your response, add a postscript starting with P.S.", {
            "postscript_marker": "P.S."
        }
    if instruction == "startend:end_checker":
        phrase = "Is there anything else I can help with?"
        return f"Finish your response with this exact phrase: {phrase}", {"end_phrase": phrase}
    raise ValueError(instruction)


#: Real IFEval instruction ids whose checkers run offline and deterministically (the language check is
#: left out: langdetect is random unless seeded). The two sentence-counting ones exercise NLTK's punkt.
IFEVAL_INSTRUCTIONS = (
    "length_constraints:number_sentences",
    "keywords:forbidden_words",
    "change_case:capital_word_frequency",
    "length_constraints:number_words",
    "punctuation:no_comma",
    "detectable_format:title",
    "change_case:english_lowercase",
    "keywords:existence",
    "keywords:letter_frequency",
    "detectable_format:number_bullet_lists",
    "detectable_content:postscript",
    "startend:end_checker",
)


def _ifeval(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    records = []
    for i in range(rows):
        # Every instruction appears within the first rows, so even a limit-2 run scores several kinds.
        first = IFEVAL_INSTRUCTIONS[(2 * i) % len(IFEVAL_INSTRUCTIONS)]
        second = IFEVAL_INSTRUCTIONS[(2 * i + 1) % len(IFEVAL_INSTRUCTIONS)]
        ids = [first, second] + (
            [rng.choice(("punctuation:no_comma", "startend:end_checker"))] if i % 3 == 2 else []
        )
        ids = list(dict.fromkeys(ids))
        sentences, kwargs = [], []
        for instruction in ids:
            sentence, params = _ifeval_instruction(instruction, rng)
            sentences.append(sentence)
            kwargs.append({field.name: params.get(field.name) for field in _IFEVAL_KWARGS})
        topic = rng.choice(_WORDS)
        records.append(
            {
                "key": 1000 + i,
                "prompt": f"Write a short essay about a {topic}. " + " ".join(sentences),
                "instruction_id_list": ids,
                "kwargs": kwargs,
            }
        )
    schema = pa.schema(
        [
            ("key", pa.int64()),
            ("prompt", pa.string()),
            ("instruction_id_list", pa.list_(pa.string())),
            ("kwargs", pa.list_(_IFEVAL_KWARGS)),
        ]
    )
    return pa.Table.from_pylist(records, schema=schema)


_MATH_TYPES = {
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}


def _math(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    """``rows`` Level 5 problems, and between them a few easier ones the task filters out."""
    records = []
    for i in range(rows + rows // 4):
        level = 5 if i % 5 != 4 else rng.randrange(1, 5)
        a, b, c = rng.randrange(2, 30), rng.randrange(2, 30), rng.randrange(2, 9)
        answer = a + b * c
        records.append(
            {
                "problem": f"What is the value of ${a} + {b} \\cdot {c}$?",
                "level": f"Level {level}",
                "solution": f"First, ${b} \\cdot {c} = {b * c}$. Then ${a} + {b * c} = \\boxed{{{answer}}}$.",
                "type": _MATH_TYPES.get(config or "", "Algebra"),
            }
        )
    return pa.Table.from_pylist(
        records,
        schema=pa.schema([(k, pa.string()) for k in ("problem", "level", "solution", "type")]),
    )


_PEOPLE = ("Alice", "Bruno", "Chen", "Dana", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas")
_PLACES = ("drawer", "shelf", "basket", "cupboard", "desk", "garage", "attic")


def _musr(config: str | None, split: str, rng: Rng, rows: int) -> pa.Table:
    records = []
    for _ in range(rows):
        people = rng.sample(_PEOPLE, 4)
        if split == "murder_mysteries":
            choices = people[:2]
            question = "Who is the most likely murderer?"
            narrative = (
                f"{people[2]} was found in the {rng.choice(_WORDS)}. {_sentence(rng, 12)} "
                f"{people[0]} and {people[1]} were seen nearby."
            )
        elif split == "object_placements":
            choices = rng.sample(_PLACES, rng.randrange(3, 6))
            question = (
                f"Which location is the most likely place {people[0]} would look to find the keys given "
                "the story?"
            )
            narrative = (
                f"{people[0]} left the keys in the {choices[0]}. {_sentence(rng, 12)} {people[1]} moved them."
            )
        else:
            tasks = rng.sample(_WORDS, 2)
            choices = [
                f"{tasks[0]}: {people[a]}, {tasks[1]}: {people[b]} and {people[c]}"
                for a, b, c in ((0, 1, 2), (1, 0, 2), (2, 0, 1))
            ]
            question = (
                "Given the story, how would you uniquely allocate each person to make sure both tasks are "
                "accomplished efficiently?"
            )
            narrative = f"A manager must staff the {tasks[0]} and the {tasks[1]}. {_sentence(rng, 12)}"
        index = rng.randrange(len(choices))
        records.append(
            {
                "narrative": narrative,
                "question": question,
                "choices": repr(choices),  # a Python literal, as in the dataset's CSV files
                "answer_index": index,
                "answer_choice": choices[index],
            }
        )
    schema = pa.schema(
        [
            ("narrative", pa.string()),
            ("question", pa.string()),
            ("choices", pa.string()),
            ("answer_index", pa.int64()),
            ("answer_choice", pa.string()),
        ]
    )
    return pa.Table.from_pylist(records, schema=schema)


#: Dataset repository -> a writer of made-up rows in its exact schema.
SYNTHESIZERS: dict[str, Synthesizer] = {
    "SaylorTwift/bbh": _bbh,
    "TIGER-Lab/MMLU-Pro": _mmlu_pro,
    "Idavidrein/gpqa": _gpqa,
    "wis-k/instruction-following-eval": _ifeval,
    "DigitalLearningGmbH/MATH-lighteval": _math,
    "TAUR-Lab/MuSR": _musr,
}


def _content_revision(mirror: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(mirror).as_posix()}\0{_sha256(path)}\n".encode())
    return f"synthetic-{digest.hexdigest()[:40]}"


def synthesize(folder: Path, rows: int = 12, seed: int = 0, task_set: TaskSet | None = None) -> Path:
    """Write a mirror of made-up data in the real datasets' schemas for every subtask; return it.

    Deterministic: the same rows and seed give byte-identical files. Each dataset's revision is
    ``synthetic-<hash of its files>``. Scores on it are meaningless; it exists so the whole pipeline runs
    without the Hub.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    task_set = task_set or load_task_set()
    mirror = Path(folder).resolve()
    mirror.mkdir(parents=True, exist_ok=True)
    written: dict[tuple[str, str | None, str], int] = {}
    for repo, config, split in task_set.data_files():
        synthesizer = SYNTHESIZERS.get(repo)
        if synthesizer is None:
            raise MirrorError(
                f"no synthetic data for {repo}: only {', '.join(SYNTHESIZERS)} can be synthesized"
            )
        table = synthesizer(config, split, random.Random(f"{seed}/{repo}/{config}/{split}"), rows)
        path = mirror_file(mirror, repo, config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        written[(repo, config, split)] = table.num_rows
    revisions = {
        repo: _content_revision(mirror, (mirror_file(mirror, *key) for key in written if key[0] == repo))
        for repo in dict.fromkeys(key[0] for key in written)
    }
    punkt = prepare_nltk_data(mirror)
    _write_manifest(mirror, task_set, written, revisions, "synthetic", punkt)
    return mirror


# --------------------------------------------------------------------------------------------- the Hub


def _hub_error(repo: str, exc: Exception) -> DatasetSourceError:
    return DatasetSourceError(f"could not read dataset {repo} from the Hub: {exc}")


def resolve_revisions(task_set: TaskSet, token: str | None = None, *, update: bool = False) -> dict[str, str]:
    """The commit sha of each dataset repository: the pinned one, or (unpinned, or with update) the Hub's."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    revisions = {}
    for pin in task_set.datasets:
        if pin.revision and not update:
            revisions[pin.repo] = pin.revision
            continue
        try:
            sha = api.dataset_info(pin.repo).sha
        except Exception as exc:  # huggingface_hub raises HTTP, gating and network errors alike
            raise _hub_error(pin.repo, exc) from exc
        if not sha:
            raise DatasetSourceError(f"the Hub gave no commit sha for dataset {pin.repo}")
        revisions[pin.repo] = sha
    return revisions


def pin(task_set: TaskSet, token: str | None = None, *, update: bool = False) -> TaskSet:
    """Write each dataset's current Hub commit into the manifest (only unpinned ones unless update)."""
    revisions = resolve_revisions(task_set, token, update=update)
    changed = {repo: sha for repo, sha in revisions.items() if task_set.dataset(repo).revision != sha}
    return write_revisions(task_set, changed) if changed else task_set


def mirror_from_hub(folder: Path, task_set: TaskSet, token: str | None = None) -> Path:
    """Copy every split the task set reads from the Hub, at the pinned (else current) revision; return it."""
    import datasets

    mirror = Path(folder).resolve()
    mirror.mkdir(parents=True, exist_ok=True)
    revisions = resolve_revisions(task_set, token)
    written: dict[tuple[str, str | None, str], int] = {}
    for repo, config, split in task_set.data_files():
        try:
            dataset = datasets.load_dataset(repo, config, split=split, revision=revisions[repo], token=token)
        except Exception as exc:  # datasets wraps Hub errors in several types
            raise _hub_error(repo, exc) from exc
        path = mirror_file(mirror, repo, config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(path))
        written[(repo, config, split)] = dataset.num_rows
        log.info(
            "mirrored %s/%s/%s at %s: %d rows",
            repo,
            config or "default",
            split,
            revisions[repo],
            dataset.num_rows,
        )
    punkt = prepare_nltk_data(mirror, download=True)
    _write_manifest(mirror, task_set, written, revisions, "hub", punkt)
    return mirror
