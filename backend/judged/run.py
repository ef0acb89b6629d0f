"""A request's run on one judged leaderboard, inside the evaluation child (local slots or a Slurm job):
generate, judge, write AlpacaEval's files.

1. The instruction set and the reference's outputs, from the data mirror (else the Hub, pinned).
2. The evaluated model answers every instruction through its chat template, greedily
   (backend.judged.generate; resumable: each finished output is kept beside the request's cache).
3. The judge compares each answer with the reference's: an endpoint judge (AlpacaEval 2's weighted one)
   through LEADERBOARD_JUDGE_BASE_URL with bounded concurrency and retries, or a local judge model
   (PandaLM) loaded here, on the run's GPUs, both orders. Every judgement goes through the durable cache
   (LEADERBOARD_JUDGE_CACHE): a run killed mid-way loses none, and no pair is ever judged twice.
4. ``model_outputs.json`` and ``annotations.json`` in AlpacaEval's layout, which the worker scores with
   AlpacaEval's metrics (backend.services.judged) and publishing copies into the results dataset.

Nothing here touches the database: the child may run on a cluster node that cannot reach it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.evaluation.runner import JUDGE_KEY_VARIABLE, RunSpec
from backend.judged.config import JudgedConfig, JudgeKind, JudgePrompt
from backend.judged.judges import Judge, JudgingRun

log = logging.getLogger(__name__)

OUTPUTS = "model_outputs.json"
ANNOTATIONS = "annotations.json"


def generator_name(model: str) -> str:
    """The evaluated model's name in AlpacaEval's files: its repo id with '/' as '__'."""
    return model.replace("/", "__")


def progress_file(spec: RunSpec, config: JudgedConfig) -> Path:
    """Where a request's generation for ``config`` keeps its finished outputs, across attempts."""
    return Path(spec.cache_path).parent / "judged" / config.name / "outputs.jsonl"


def run_judged(spec: RunSpec, config: JudgedConfig, out: Path) -> dict[str, Any]:
    """Generate and judge ``spec``'s model on ``config``; what the worker needs to score it (the files
    written in ``out``, the GLM table and the run's provenance)."""
    from backend.judged.data import (
        glm_table_path,
        judged_revisions,
        read_instructions,
        read_reference_outputs,
    )
    from backend.judged.generate import GenerationSettings, generate_outputs
    from backend.judged.outputs import write_model_outputs
    from backend.judged.verdicts import Pair

    started = time.monotonic()
    mirror = Path(spec.data_mirror) if spec.data_mirror else None
    instructions = read_instructions(config, mirror)
    if spec.limit is not None:  # the first instructions: their positions are the GLM table's
        instructions = instructions[: spec.limit]
    references = read_reference_outputs(config, mirror, instructions)
    g = config.generation
    settings = GenerationSettings(
        max_new_tokens=g.max_new_tokens,
        stop=g.stop,
        seed=g.seed,
        temperature=g.temperature,
        batch_size=g.batch_size,
    )
    generator = generator_name(spec.model)
    progress = progress_file(spec, config)
    progress.parent.mkdir(parents=True, exist_ok=True)
    outputs = generate_outputs(spec, instructions, settings, generator, progress)
    out.mkdir(parents=True, exist_ok=True)
    outputs_file = write_model_outputs(out / OUTPUTS, outputs)
    generated = time.monotonic()

    pairs = [Pair(o.instruction, ref, o.output) for o, ref in zip(outputs, references, strict=True)]
    judge, close = _judge(spec, config)
    try:
        # An endpoint takes several calls at once; a local judge is one model, batched instead.
        concurrency = spec.judge_concurrency if config.judge.kind is JudgeKind.ENDPOINT else 1
        judging = _judge_all(spec, judge, pairs, concurrency)
    finally:
        close()
    records = [
        {
            "instruction": o.instruction,
            "dataset": o.dataset,
            "output_1": judged.pair.reference,
            "generator_1": config.reference.generator,
            "output_2": judged.pair.model,
            "generator_2": generator,
            "annotator": config.judge.annotator,
            "preference": judged.preference,
            "price_per_example": judged.price_per_example,
            "time_per_example": judged.time_per_example,
            "raw_completion": _raw(judged.raw_completion),
        }
        for o, judged in zip(outputs, judging.pairs, strict=True)
    ]
    annotations_file = out / ANNOTATIONS
    annotations_file.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    table = glm_table_path(config, mirror)
    prices = [r["price_per_example"] for r in records]
    return {
        "annotations_file": str(annotations_file),
        "model_outputs_file": str(outputs_file),
        "glm_table_file": str(table) if table is not None else None,
        "provenance": {
            "annotations_file": str(annotations_file),
            "model_outputs_file": str(outputs_file),
            "judged": {
                "annotator": config.judge.annotator,
                "judge": judge.identity,
                "judge_prompt_sha256": judge.prompt_hash,
                "judge_decoding": dict(judge.decoding),
                "reference": config.reference.generator,
                "generator": generator,
                "generation": settings.decoding(),
                "dataset_revisions": judged_revisions(config, mirror).as_dict(),
                "data_source": "mirror" if mirror is not None else "hub",
                "instructions": len(instructions),
                "judged_anew": judging.judged_anew,
                "from_cache": judging.from_cache,
                "price": sum(p for p in prices if p is not None)
                if all(p is not None for p in prices)
                else None,
                "generation_seconds": round(generated - started, 3),
                "judging_seconds": round(time.monotonic() - generated, 3),
            },
        },
    }


def _raw(value: str | dict[str, str]) -> Any:
    """raw_completion as alpaca-eval writes it: the endpoint's completion as an object, text as text."""
    if isinstance(value, dict):
        return {k: _raw(v) for k, v in value.items()}
    try:
        return json.loads(value)
    except ValueError:
        return value


def _judge_all(spec: RunSpec, judge: Judge, pairs: list[Any], concurrency: int) -> JudgingRun:
    from backend.judged.cache import JudgementCache
    from backend.judged.judges import judge_pairs

    cache_path = (
        Path(spec.judge_cache) if spec.judge_cache else Path(spec.cache_path).parent / "judgements.sqlite"
    )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with JudgementCache(cache_path) as cache:
        return judge_pairs(judge, pairs, cache, concurrency=concurrency)


def _judge(spec: RunSpec, config: JudgedConfig) -> tuple[Judge, Callable[[], None]]:
    """The config's judge, and what releases it (the endpoint's connections) once the judging is done."""
    judge = config.judge
    if judge.kind is JudgeKind.ENDPOINT:
        from backend.errors import ConfigurationError
        from backend.judged.alpaca_judge import WeightedAlpacaEvalJudge
        from backend.serving.client import ChatClient

        if judge.prompt is not JudgePrompt.WEIGHTED_ALPACA_EVAL_GPT4_TURBO:
            raise ConfigurationError(
                f"{config.name}: an endpoint judge reads the weighted gpt4_turbo prompt only"
            )
        if not spec.judge_base_url:
            raise ConfigurationError(
                f"{config.name} is judged through an OpenAI-compatible endpoint: set LEADERBOARD_JUDGE_BASE_URL "
                "(a vLLM server, or `leaderboard serve-models`) and LEADERBOARD_JUDGE_MODEL"
            )
        client = ChatClient(
            spec.judge_base_url,
            api_key=os.environ.get(JUDGE_KEY_VARIABLE) or None,
            max_concurrency=spec.judge_concurrency,
        )
        endpoint_judge = WeightedAlpacaEvalJudge(
            client,
            spec.judge_model or judge.model,
            price_per_1k_input=spec.judge_price_input_per_1k,
            price_per_1k_output=spec.judge_price_output_per_1k,
        )
        return endpoint_judge, client.close
    from backend.judged.pandalm import PandaLMJudge

    revision = judge.revision or _cached_commit(judge.model)
    local = PandaLMJudge.from_hub_cache(
        judge.model, revision, max_new_tokens=judge.max_new_tokens, device=_device(spec)
    )
    return local, lambda: None


def _cached_commit(repo_id: str) -> str:
    """The commit of ``main`` in the Hugging Face cache (the model store), for a judge not pinned yet: the
    run records the one it loaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from backend.errors import JudgeNotLoadable

    try:
        return Path(snapshot_download(repo_id, revision="main", local_files_only=True)).name
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise JudgeNotLoadable(
            f"the judge {repo_id} is not in the model store: download it there first "
            f"(`hf download {repo_id}`), and pin its commit in the leaderboard config (judge.revision)"
        ) from exc


def _device(spec: RunSpec) -> str:
    if spec.device != "auto":
        return spec.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
