"""The reference's own command, run bare in tests: `lm_eval ... --tasks leaderboard` on the data of a mirror.

The bare harness reads its datasets by Hub id with unmodified task files. Offline, the `datasets` library
finds them in an Arrow cache under HF_DATASETS_CACHE (`<namespace>___<snake_case name>/<config>/...`);
`datasets_cache` writes one from a data mirror's parquet files with `datasets`' own builder, so the bare run
reads exactly the rows our runs read. Nothing here comes from the project's evaluation code: the command
line is written out by hand, as the reference published it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from backend.evaluation.data import read_manifest

_SAMPLES = re.compile(r"^samples_(?P<task>.+)_\d{4}-\d{2}-\d{2}T[0-9.\-]+\.jsonl$")


def datasets_cache(mirror: Path, cache: Path) -> Path:
    """An Arrow cache of every dataset of ``mirror``, where `datasets` looks for it offline."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    by_repo: dict[str, dict[str, dict[str, str]]] = {}
    for name, entry in read_manifest(mirror)["files"].items():
        by_repo.setdefault(entry["repo"], {}).setdefault(entry["config"] or "default", {})[entry["split"]] = (
            name
        )
    staging = cache.parent / f"{cache.name}-staging"
    for repo, configs in by_repo.items():
        folder = staging / repo  # a local dataset folder named like the repository, its configs in a card
        folder.mkdir(parents=True, exist_ok=True)
        card = {
            "configs": [
                {
                    "config_name": config,
                    "data_files": [
                        {"split": split, "path": str(mirror / file)} for split, file in splits.items()
                    ],
                }
                for config, splits in configs.items()
            ]
        }
        (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n", encoding="utf-8")
        namespace, dataset = repo.split("/")
        root = cache / f"{namespace}___{camelcase_to_snakecase(dataset)}"
        for config in configs:
            builder = datasets.load_dataset_builder(str(folder), config)
            builder.download_and_prepare(output_dir=str(root / config / "0.0.0" / "mirror"))
    shutil.rmtree(staging)
    return cache


def bare_environment(model_store: Path, datasets_cache: Path, mirror: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADERBOARD_", "HF_"))}
    env.update(
        HF_HOME=str(home),
        HF_HUB_CACHE=str(model_store),
        HF_DATASETS_CACHE=str(datasets_cache),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        NLTK_DATA=str(mirror / "nltk_data"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_bare(arguments: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lm_eval ARGUMENTS` (the harness's own command line) in a subprocess."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "lm_eval", *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def samples(folder: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Every samples_<task>_<time>.jsonl under ``folder``: task -> doc_id -> the sample record."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for path in folder.rglob("samples_*.jsonl"):
        match = _SAMPLES.match(path.name)
        assert match is not None, path.name
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        found[match["task"]] = {record["doc_id"]: record for record in records}
    return found


def results(folder: Path) -> dict[str, Any]:
    (path,) = folder.rglob("results_*.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
