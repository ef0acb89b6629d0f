"""`make bench` at a tiny size: every benchmark runs for real (the worker, the harness, both databases,
publishing, re-scoring) and the results file holds every figure. Timings are never asserted."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench")]


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The bench sets the offline variables for its own process: give the next test the environment back."""
    saved = dict(os.environ)
    yield None
    os.environ.clear()
    os.environ.update(saved)


def _positive(*values: float) -> bool:
    return all(isinstance(v, float | int) and v > 0 for v in values)


@pytest.mark.usefixtures("restored_environment")
def test_every_bench_runs_and_the_json_holds_every_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.databases
    from bench.report import markdown
    from bench.run import BENCHES, run_all

    monkeypatch.setattr(bench.databases, "POSTGRES_URL", POSTGRES_URL)
    results, path = run_all("tiny", tmp_path / "results")

    assert path.parent == tmp_path / "results" and path.name.startswith(results["date"])
    saved = json.loads(path.read_text())
    assert saved["benches"].keys() == set(BENCHES)
    assert not [name for name, figures in saved["benches"].items() if "error" in figures]
    machine = saved["machine"]
    assert machine["cpus"] >= 1 and machine["host"]
    for package in ("python", "torch", "transformers", "lm-eval", "sqlalchemy", "sqlite", "postgresql"):
        assert machine["versions"][package], package

    harness = saved["benches"]["harness"]
    assert harness["subtasks"] == 39 and harness["limit"] == 1
    assert (
        len(harness["ratio"]["values"]) == len(harness["ratio_cpu"]["values"]) == harness["repetitions"] == 1
    )
    for kind in ("", "_cpu"):
        full, bare = harness[f"full_path{kind}_seconds"]["median"], harness[f"bare{kind}_seconds"]["median"]
        assert _positive(full, bare)
        assert harness[f"ratio{kind}"]["median"] == pytest.approx(full / bare)
    assert harness["target_ratio"]["value"] == harness["ratio_cpu"]["median"]
    assert 0 < harness["bare_simple_evaluate_seconds"]["median"] < harness["bare_seconds"]["median"]
    assert isinstance(harness["target_ratio"]["met"], bool)

    for kind in ("sqlite", "postgres"):
        queue = saved["benches"]["queue"][kind]
        assert (queue["pending_requests"], queue["votes_loaded"]) == (500, 2_000)
        assert queue["claim"]["n"] == 20 and _positive(queue["claim"]["claims_per_second"])
        assert queue["claim"]["p50_ms"] <= queue["claim"]["p99_ms"] <= queue["claim"]["max_ms"]
        assert queue["votes_concurrent"]["votes"] == 8 * 5 and _positive(
            queue["votes_concurrent"]["votes_per_second"]
        )
        assert queue["page_top50"]["n"] == 10
        assert "target_votes_per_second" in queue
    assert "target_claim_p99_ms" in saved["benches"]["queue"]["postgres"]

    from bench.pages import leaderboard_views

    for kind in ("sqlite", "postgres"):
        pages = saved["benches"]["pages"][kind]
        assert (pages["models"], pages["pending_requests"]) == (120, 300)
        assert pages["leaderboard"].keys() == leaderboard_views(3).keys()
        for figures in [*pages["leaderboard"].values(), *pages["queue"].values()]:
            assert figures["n"] >= 2 and figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
        assert pages["first_page_bytes"] > pages["first_page_gzip_bytes"] > 0
        assert pages["queue_withdraw_buttons"] > 0  # the signed-in user's votes are on the page
        assert pages["after_a_new_result"]["n"] == pages["after_a_flag"]["n"] == 1
        for name in ("target_page_p95_ms", "target_first_page_bytes", "target_queue_p95_ms"):
            assert isinstance(pages[name]["met"], bool)

    publishing = saved["benches"]["publishing"]
    assert publishing["models"] == publishing["table_rows"] == 20
    assert publishing["first_publish_files"] >= 2 * 20  # a results file and a request file per model
    assert publishing["incremental_publish_files"] >= 3  # its results file, its request file, the table
    assert _positive(publishing["table_and_card_seconds"], publishing["incremental_publish_seconds"])

    rescoring = saved["benches"]["rescoring"]
    assert rescoring["models"] == rescoring["new_versions_stored"] == 3
    assert rescoring["samples_per_model"] == 1_192 and rescoring["sample_bytes_mean"] > 5_000

    arena = saved["benches"]["arena"]
    assert (arena["battles"], arena["models"], arena["bootstrap_rounds"]) == (2_000, 10, 10)
    assert _positive(arena["seconds"], arena["read_parquet_seconds"], arena["fit_and_bootstrap_seconds"])

    for kind in ("sqlite", "postgres"):
        votes = saved["benches"]["arena_votes"][kind]
        thinking, closed = votes["with_think_time"], votes["closed_loop_saturation"]
        assert thinking["voters"] == closed["voters"] == 20 and thinking["think_mean_seconds"] == 0.05
        assert thinking["votes"] == thinking["n"] > 0 and closed["votes"] == 20 * 5
        for figures in (thinking, closed):
            assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
            assert _positive(figures["achieved_votes_per_second"])
        assert thinking["offered_votes_per_second"] == pytest.approx(20 / 0.05)
    assert "target_vote_p99_ms" in saved["benches"]["arena_votes"]["postgres"]
    assert "target_vote_p99_ms" not in saved["benches"]["arena_votes"]["sqlite"]

    gpu = saved["benches"]["gpu"]
    import torch

    if torch.cuda.is_available():
        assert _positive(
            gpu["tokens"], gpu["ours"]["tokens_per_second"], gpu["harness_defaults"]["gpu_seconds"]
        )
    else:
        assert gpu["skipped"].startswith("no GPU")

    names = {t["name"] for t in saved["targets"]}
    assert names == {
        "harness ratio", "claim p99 (PostgreSQL)", "votes/s (sqlite)", "votes/s (postgres)",
        "page p95 (sqlite)", "first page bytes (sqlite)", "queue page p95 (sqlite)",
        "page p95 (postgres)", "first page bytes (postgres)", "queue page p95 (postgres)",
        "publish table+card", "publish incremental", "re-score", "arena ratings", "arena vote p99 (PostgreSQL)",
    }  # fmt: skip
    summary = markdown(saved)
    assert "## Closing note" in summary and all(name in summary for name in names)
    for missed in (t for t in saved["targets"] if not t["met"]):
        assert f"{missed['name']}: " in summary and "What would close it" in summary


def test_the_gpu_bench_reports_the_compute_bound_ratio() -> None:
    from bench.gpu import compute_bound_ratio, peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops("a CPU") is None
    # 1e6 tokens of a 1B model on a 1 PFLOP/s GPU: 2 s at peak; in 4 s, half the peak.
    assert compute_bound_ratio(1_000_000, 1_000_000_000, 4.0, 1e15) == pytest.approx(0.5)
