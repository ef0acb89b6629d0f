"""Judged leaderboards end to end: one deployment serves open_llm_v2, alpaca_eval_2 (an endpoint judge: our
OpenAI-compatible endpoint over a tiny local model) and pandalm (a local judge model run in the evaluation
job). A submitted model is evaluated on all three by the CLI worker and by schedulers with the Slurm
executor; every table publishes and loads with datasets."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from backend.app import App
from backend.domain import Status
from backend.hub.local_store import LocalModelStore
from backend.judged.config import JUDGED_NEEDS_CHAT_TEMPLATE, METRICS
from backend.leaderboards.config import CONFIG_DIR
from backend.modelbuilder import build_tiny_model
from backend.serving.app import create_serving_app
from backend.serving.models import Catalog, ModelPool
from backend.settings import Settings
from tests.acceptance import test_slurm
from tests.commands import clean_env, leaderboard
from tests.serving import build_leaning_judge, live

pytestmark = pytest.mark.slow
slurm_conf, schedulers = test_slurm.slurm_conf, test_slurm.schedulers  # the Slurm tests' fixtures
CHAT = "acme/tiny-chat"
BASE = "acme/tiny-base"  # no chat template: evaluated on open_llm_v2 only
LOCAL_JUDGE = "judge/tiny-pandalm"
ENDPOINT_JUDGE = "judge/leaning"  # answers "m" or "M" often enough for weighted preferences
INSTRUCTIONS = 2  # LEADERBOARD_EVAL_LIMIT: documents per subtask, and instructions per judged leaderboard


def _config(folder: Path, name: str, change) -> Path:
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    data["generation"].update(max_new_tokens=12, batch_size=2)
    change(data)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalModelStore, Path, list[Path]]:
    from backend.evaluation.synthetic import synthesize
    from backend.judged.data import load_judged_configs
    from backend.judged.synthetic import synthesize_judged

    store = LocalModelStore(tmp_path_factory.mktemp("judged-models"))
    build_tiny_model(store, CHAT)
    build_tiny_model(store, BASE, chat_template=False)
    # The local judge answers "1" or "2" (one token: its first line), so every pair gets a verdict.
    build_tiny_model(store, LOCAL_JUDGE, answers=("1", "2"))
    build_leaning_judge(store, tmp_path_factory.mktemp("leaning"), ENDPOINT_JUDGE)
    folder = tmp_path_factory.mktemp("judged-configs")
    configs = [
        _config(folder, "alpaca_eval_2", lambda d: None),
        _config(folder, "pandalm", lambda d: d["judge"].update(model=LOCAL_JUDGE, max_new_tokens=1)),
    ]
    mirror = tmp_path_factory.mktemp("judged-mirror")
    synthesize(mirror)
    synthesize_judged(mirror, load_judged_configs([str(c) for c in configs]), rows=6)
    return store, mirror, configs


@pytest.fixture(scope="module")
def endpoint(assets) -> Iterator[str]:
    store = assets[0]
    app = create_serving_app(Catalog(store, [ENDPOINT_JUDGE]), ModelPool(store, max_loaded=1, device="cpu"))
    with live(app) as base:
        yield f"{base}/v1"


def judged_settings(assets, endpoint: str, work: Path) -> dict[str, str]:
    store, mirror, configs = assets
    return {
        "LEADERBOARD_MODEL_STORE": str(store.root),
        "LEADERBOARD_DATA_MIRROR": str(mirror),
        "LEADERBOARD_WORK_DIR": str(work),
        "LEADERBOARD_RESULTS": str(work.parent / "results"),
        "LEADERBOARD_EVAL_LIMIT": str(INSTRUCTIONS),
        "LEADERBOARD_EVAL_DEVICE": "cpu",
        "LEADERBOARD_EVAL_BATCH_SIZE": "8",
        "LEADERBOARD_JUDGED": ",".join(str(c) for c in configs),
        "LEADERBOARD_JUDGE_BASE_URL": endpoint,
        "LEADERBOARD_JUDGE_MODEL": ENDPOINT_JUDGE,
        "LEADERBOARD_JUDGE_API_KEY": "sk-not-a-secret-this-endpoint-takes-any",
    }


def submit(env: dict[str, str], model: str, *flags: str) -> int:
    result = leaderboard(env, "submit", model, "--user", "alice", *flags, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    # Told at once which judged leaderboards it will not be on, and why.
    expected = (
        {}
        if "--no-chat-template" not in flags
        else dict.fromkeys(("alpaca_eval_2", "pandalm"), JUDGED_NEEDS_CHAT_TEMPLATE)
    )
    assert answer.get("not_evaluated_on", {}) == expected
    return int(answer["id"])


def check_evaluated(app: App, request_id: int, work: Path) -> None:
    """The request's three results: the benchmark one, and AlpacaEval's metrics on both judged ones, from
    annotations written in AlpacaEval's layout."""
    request = app.requests.get(request_id)
    assert request.status is Status.FINISHED, request.failure_reason
    boards = {e.leaderboard: e for e in app.evaluations.all() if e.request_id == request_id}
    assert set(boards) == {"open_llm_v2", "alpaca_eval_2", "pandalm"}
    for name in ("alpaca_eval_2", "pandalm"):
        evaluation = boards[name]
        assert set(METRICS) <= set(evaluation.scores)
        annotations = json.loads(Path(evaluation.provenance["annotations_file"]).read_text())
        assert len(annotations) == INSTRUCTIONS
        assert {a["generator_1"] for a in annotations} == {"gpt4_1106_preview"}
        assert {a["generator_2"] for a in annotations} == {request.model.replace("/", "__")}
        outputs = json.loads(Path(evaluation.provenance["model_outputs_file"]).read_text())
        assert [set(o) for o in outputs] == [{"dataset", "instruction", "output", "generator"}] * INSTRUCTIONS
        judged = evaluation.provenance["judged"]
        assert judged["data_source"] == "mirror" and judged["instructions"] == INSTRUCTIONS
        assert judged["judged_anew"] + judged["from_cache"] == INSTRUCTIONS * (2 if name == "pandalm" else 1)
    alpaca = boards["alpaca_eval_2"].provenance["judged"]
    assert alpaca["judge"] == f"endpoint:{ENDPOINT_JUDGE}"
    assert alpaca["length_controlled_glm"] == "length_controlled_v1"  # the mirror carries df_gamed.csv
    pandalm = boards["pandalm"].provenance["judged"]
    assert pandalm["judge"].startswith(f"{LOCAL_JUDGE}@")
    # No difficulty table for this judge: the fallback GLM, named (or, on two records, why none was fitted).
    assert pandalm["length_controlled_glm"] == "length_controlled_minimal" or pandalm[
        "length_controlled_note"
    ].startswith("not computed")
    pandalm_annotations = json.loads(Path(boards["pandalm"].provenance["annotations_file"]).read_text())
    assert all(set(a["raw_completion"]) == {"reference_first", "model_first"} for a in pandalm_annotations)
    # Both orders judged, each answered "1" or "2": a verdict per pair, a tie where the order flipped it.
    assert all(a["preference"] in (1.0, 1.5, 2.0) for a in pandalm_annotations)
    assert boards["pandalm"].scores["n_total"] == INSTRUCTIONS
    # The key reached the judge through the environment only: no run file holds it.
    for path in Path(boards["alpaca_eval_2"].artifacts).rglob("*.json"):
        assert "sk-not-a-secret" not in path.read_text(errors="replace"), path


def check_published(env: dict[str, str], results: Path) -> None:
    import datasets

    published = leaderboard(env, "publish", "--json", timeout=300)
    assert published.returncode == 0, published.stderr
    benchmark = datasets.load_dataset(str(results), split="train")
    assert CHAT in benchmark["fullname"]
    for name in ("alpaca_eval_2", "pandalm"):
        table = datasets.load_dataset(str(results), name, split="train")
        assert table["name"] == [CHAT.replace("/", "__")]
        assert table.column_names[1] in METRICS
        folder = results / "judged" / name / "results" / CHAT.replace("/", "__")
        assert (folder / "model_outputs.json").is_file()
        assert len(list(folder.glob("*/annotations.json"))) == 1


@pytest.mark.timeout(900)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_worker_evaluates_a_model_on_the_benchmark_and_both_judged_leaderboards(
    assets, endpoint, database_url, tmp_path
):
    work = tmp_path / "work"
    env = clean_env(LEADERBOARD_DATABASE_URL=database_url, **judged_settings(assets, endpoint, work))
    chat = submit(env, CHAT, "--model-type", "chat")
    base = submit(env, BASE, "--model-type", "pretrained", "--no-chat-template")
    for _ in range(2):
        worked = leaderboard(env, "worker", "--once", timeout=600)
        assert worked.returncode == 0, worked.stderr[-3000:]
    app = App.open(Settings(database_url=database_url, judged=env["LEADERBOARD_JUDGED"]))
    check_evaluated(app, chat, work)
    # The model without a chat template: on the benchmark leaderboard only, the rule named.
    assert {e.leaderboard for e in app.evaluations.all() if e.request_id == base} == {"open_llm_v2"}
    skipped = app.evaluations.get(base, "open_llm_v2").provenance["judged_skipped"]  # type: ignore[union-attr]
    assert skipped == {str(c): JUDGED_NEEDS_CHAT_TEMPLATE for c in assets[2]}
    assert [r["fullname"] for r in app.leaderboards["alpaca_eval_2"].rows()] == [CHAT]
    # Every judgement is in the durable cache: AlpacaEval's judge one order, PandaLM both.
    with sqlite3.connect(work / "judgements.sqlite") as cache:
        (stored,) = cache.execute("select count(*) from judgements").fetchone()
    assert stored == INSTRUCTIONS * 3
    app.close()
    check_published(env, work.parent / "results")


@pytest.mark.timeout(900)
@pytest.mark.xdist_group("slurm")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_schedulers_with_the_slurm_executor_evaluate_on_every_leaderboard(
    slurm_conf, assets, endpoint, database_url, tmp_path, schedulers
):
    store, mirror, _ = assets
    work = tmp_path / "work"
    env = test_slurm.environment(database_url, slurm_conf, store, mirror, work)
    env.update(judged_settings(assets, endpoint, work))
    chat = submit(env, CHAT, "--model-type", "chat")
    schedulers(env, "s1")
    app = App.open(Settings(database_url=database_url, judged=env["LEADERBOARD_JUDGED"]))
    test_slurm.wait_for(
        lambda: app.requests.get(chat).status in (Status.FINISHED, Status.FAILED), 840, "the run", tmp_path
    )
    check_evaluated(app, chat, work)
    evaluation = app.evaluations.get(chat, "pandalm")
    assert evaluation is not None and evaluation.worker_id.startswith("slurm:s1")
    assert (Path(evaluation.artifacts) / "job.sbatch").is_file()  # the judge ran in the Slurm job
    app.close()
    check_published(env, work.parent / "results")
