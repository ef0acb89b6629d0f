"""Synthetic benchmark data: small made-up datasets in the exact schemas of the six real ones, written as a
data mirror (layout in backend.evaluation.data) for tests, demos and development without gated Hub access.

Every fixture rule the task code enforces holds: BBH targets among the task's choices, enough MMLU-Pro
validation rows for 5-shot, IFEval kwargs that match their instructions, MATH solutions with a boxed answer,
MuSR choices as a Python-literal list. Scores on it are meaningless; it exists so the whole pipeline runs.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backend.errors import MirrorError
from backend.evaluation.data import file_sha256, mirror_file, prepare_nltk_data, write_manifest
from backend.evaluation.tasks import TaskSet, harness_tasks_folder, load_task_set, read_task_file

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


def content_revision(mirror: Path, files: Iterable[Path]) -> str:
    """A synthetic repository's revision: a hash of its files' names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(mirror).as_posix()}\0{file_sha256(path)}\n".encode())
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
        repo: content_revision(mirror, (mirror_file(mirror, *key) for key in written if key[0] == repo))
        for repo in dict.fromkeys(key[0] for key in written)
    }
    punkt = prepare_nltk_data(mirror)
    write_manifest(mirror, task_set, written, revisions, "synthetic", punkt)
    return mirror
