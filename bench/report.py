"""The markdown summary printed at the end of `make bench`: every figure, each target met or missed, and for
a missed one by how much and what would close it."""

from __future__ import annotations

from typing import Any

#: What would close each target when it is missed (see the README's Performance section).
REMEDIES = {
    "harness ratio": "the overhead is fixed per run (the child process and its imports, materialized task "
    "files, the request cache, saving results and samples, storing), so it falls under 2% once a bare run "
    "lasts longer than the break-even shown, i.e. for any real model; for tiny runs, fork the child from a "
    "process that has already imported lm-eval",
    "claim p99 (PostgreSQL)": "a database on its own cores (here client and server share 2 CPUs with other work)",
    "votes/s": "a database on its own cores (here client, server and other work share 2 CPUs); one round trip "
    "less per vote: pool_pre_ping checks every PostgreSQL connection before each transaction",
    "page p95": "the table is built once and kept until its stamp changes (LeaderboardService): what a page "
    "costs is the stamp's queries, filtering the kept order of 10,000 rows in Python and rendering 50 rows; "
    "keep each filter's matches beside the sorted orders, or a machine less loaded",
    "first page bytes": "fewer columns on the page, or compression (gzip) in the reverse proxy in front of it",
    "queue page p95": "the four sections are four indexed queries of 51 rows and the user's votes one more: a "
    "database on its own cores",
    "publish table+card": "keep the previous table and replace only the rows that changed",
    "publish incremental": "every publish rebuilds the whole table (the 'table+card' figure, over 1 s alone "
    "at 10,000 rows) and regenerates the whole requests export in memory to compare it with what is "
    "published: keep the previous table and replace only the rows that changed, and export only the "
    "requests that changed since the last publish",
    "re-score": "parse and write samples with a faster JSON library (orjson: reading and writing the samples "
    "is about half of the time in a profile), score models in parallel processes (one per core), and store "
    "only the re-scored metrics of each sample instead of a full copy of its record",
    "arena vote p99": "a database on its own cores: here client and server share 2 CPUs with other work, and a "
    "durable commit alone (the WAL flushed) takes about 4 ms; the vote is already one transaction of one "
    "statement and one read on PostgreSQL, with a pool of LEADERBOARD_DATABASE_POOL_SIZE connections kept open",
    "arena ratings": "read only the three columns from Parquet (already so), fit the bootstrap rounds in "
    "processes (automatic above PROCESS_MODELS models; below it, spawning costs more than the rounds)",
}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the run: name, target, value, met, missed_by (factor)."""
    benches = results["benches"]
    found: list[tuple[str, dict[str, Any] | None]] = []
    harness = benches.get("harness") or {}
    found.append(("harness ratio", harness.get("target_ratio")))
    for kind in ("sqlite", "postgres"):
        queue = (benches.get("queue") or {}).get(kind) or {}
        if kind == "postgres":
            found.append(("claim p99 (PostgreSQL)", queue.get("target_claim_p99_ms")))
        found.append((f"votes/s ({kind})", queue.get("target_votes_per_second")))
    for kind in ("sqlite", "postgres"):
        pages = (benches.get("pages") or {}).get(kind) or {}
        found.append((f"page p95 ({kind})", pages.get("target_page_p95_ms")))
        found.append((f"first page bytes ({kind})", pages.get("target_first_page_bytes")))
        found.append((f"queue page p95 ({kind})", pages.get("target_queue_p95_ms")))
    publishing = benches.get("publishing") or {}
    found.append(("publish table+card", publishing.get("target_full_seconds")))
    found.append(("publish incremental", publishing.get("target_incremental_seconds")))
    found.append(("re-score", (benches.get("rescoring") or {}).get("target_seconds")))
    found.append(("arena ratings", (benches.get("arena") or {}).get("target_seconds")))
    arena_votes = (benches.get("arena_votes") or {}).get("postgres") or {}
    found.append(("arena vote p99 (PostgreSQL)", arena_votes.get("target_vote_p99_ms")))
    return [{"name": name, **figure} for name, figure in found if figure]


def _f(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    benches = results["benches"]
    lines = [
        f"# Benchmarks {results['date']} on {machine['host']} ({results['size']} size)",
        "",
        f"{machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB; GPUs: "
        f"{', '.join(machine['gpus']) or 'none'}; commit {str(machine['commit'])[:12]}"
        f"{' (with uncommitted changes)' if machine['working_tree_changed'] else ''}; total {results['wall_seconds']:.0f} s",
        "",
        "| target | value | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for t in targets(results):
        met = "yes" if t["met"] else f"**no** (x{t['missed_by_factor']:.2f})"
        lines.append(f"| {t['name']} | {_f(t['value'])} | {t['target']} | {met} |")
    harness = benches.get("harness") or {}
    if "ratio_cpu" in harness:
        c, w = harness["ratio_cpu"], harness["ratio"]
        lines += [
            "",
            f"Harness overhead ({harness['repetitions']} alternated pairs, {harness['subtasks']} subtasks, limit "
            f"{harness['limit']}): CPU-time ratio median {c['median']:.3f} (min {c['min']:.3f}, max {c['max']:.3f}); "
            f"full path {harness['full_path_cpu_seconds']['median']:.1f} CPU-s vs bare "
            f"{harness['bare_cpu_seconds']['median']:.1f} CPU-s, overhead {harness['overhead_cpu_seconds']['median']:.2f} "
            + (
                f"CPU-s (under 2% from bare runs of {harness['ratio_target_met_from_bare_seconds']:.0f} CPU-s). "
                if harness["overhead_cpu_seconds"]["median"] > 0
                else "CPU-s: no overhead measurable above the spread. "
            )
            + f"Wall-time ratio median {w['median']:.3f} (min {w['min']:.3f}, max {w['max']:.3f}): full path "
            f"{harness['full_path_seconds']['median']:.1f} s vs bare {harness['bare_seconds']['median']:.1f} s.",
        ]
    for kind, q in (benches.get("queue") or {}).items():
        if not isinstance(q, dict) or "claim" not in q:
            continue
        lines.append(
            f"Queue on {kind} ({q['pending_requests']:,} pending, {q['votes_loaded']:,} votes): claim p50 "
            f"{q['claim']['p50_ms']:.2f} ms, p99 {q['claim']['p99_ms']:.2f} ms, {q['claim']['claims_per_second']:.0f} "
            f"claims/s; {q['votes_concurrent']['writers']} writers {q['votes_concurrent']['votes_per_second']:.0f} "
            f"votes/s (p99 {q['votes_concurrent']['p99_ms']:.1f} ms); top-50 page p50 {q['page_top50']['p50_ms']:.2f} "
            f"ms, p99 {q['page_top50']['p99_ms']:.2f} ms."
        )
    for kind, pg in (benches.get("pages") or {}).items():
        if not isinstance(pg, dict) or "leaderboard" not in pg:
            continue
        views = pg["leaderboard"]
        slowest = pg["slowest_view"]
        queue = pg["queue"]
        lines.append(
            f"Pages on {kind} ({pg['models']:,} models, {pg['pending_requests']:,} pending): leaderboard, "
            f"{len(views)} views, p50 {pg['leaderboard_all_views']['p50_ms']:.1f} ms, p95 "
            f"{pg['leaderboard_all_views']['p95_ms']:.1f} ms, slowest view '{slowest}' p95 "
            f"{views[slowest]['p95_ms']:.1f} ms; first page {pg['first_page_bytes'] / 1000:.0f} kB "
            f"({pg['first_page_gzip_bytes'] / 1000:.0f} kB gzipped); the table built at the first page "
            f"{pg['first_page_after_start_seconds']:.1f} s; first page after a new result "
            f"{pg['after_a_new_result']['max_ms']:.0f} ms, after a flag {pg['after_a_flag']['max_ms']:.0f} ms "
            f"(at most); queue p95 {queue['anonymous']['p95_ms']:.1f} ms anonymous, "
            f"{queue['signed_in']['p95_ms']:.1f} ms signed in."
        )
    p = benches.get("publishing") or {}
    if "first_publish_seconds" in p:
        lines.append(
            f"Publishing {p['models']:,} models: table+card {p['table_and_card_seconds']:.2f} s; first publish "
            f"(every results file, table, card, requests export) {p['first_publish_seconds']:.1f} s; one more model "
            f"{p['incremental_publish_seconds']:.2f} s."
        )
    rs = benches.get("rescoring") or {}
    if "seconds" in rs:
        lines.append(
            f"Re-scoring {rs['benchmark']} of {rs['models']:,} models ({rs['samples_per_model']:,} samples of "
            f"{rs['sample_bytes_mean'] / 1000:.1f} kB each): {rs['seconds']:.1f} s ({rs['seconds_per_model'] * 1000:.0f} "
            f"ms a model, {rs['samples_per_second']:.0f} samples/s), {rs['new_versions_stored']} new versions stored."
        )
    ar = benches.get("arena") or {}
    if "seconds" in ar:
        lines.append(
            f"Arena ratings of {ar['battles']:,} battles of {ar['models']} models, {ar['bootstrap_rounds']} bootstrap "
            f"rounds: {ar['seconds']:.2f} s (read Parquet {ar['read_parquet_seconds']:.2f} s, fit and bootstrap "
            f"{ar['fit_and_bootstrap_seconds']:.2f} s; over 2 processes {ar['fit_and_bootstrap_two_processes_seconds']:.2f} "
            f"s); reading the same battles as JSON {ar['read_json_seconds']:.1f} s; "
            f"{ar['drawn_inside_interval_share']:.0%} of the strengths drawn from inside their intervals."
        )
    for kind, av in (benches.get("arena_votes") or {}).items():
        if not isinstance(av, dict) or "with_think_time" not in av:
            continue
        t, c = av["with_think_time"], av["closed_loop_saturation"]
        lines.append(
            f"Arena votes on {kind}, {t['voters']} voters, think time mean {t['think_mean_seconds']:g} s: {t['votes']:,} "
            f"votes, {t['offered_votes_per_second']:.0f} offered and {t['achieved_votes_per_second']:.0f} achieved "
            f"votes/s, p50 {t['p50_ms']:.1f} ms, p95 {t['p95_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms, max "
            f"{t['max_ms']:.0f} ms ({t['connections_opened']} connections opened); closed loop (no think time, "
            f"saturation, no target) {c['achieved_votes_per_second']:.0f} votes/s, p50 {c['p50_ms']:.1f} ms, p99 "
            f"{c['p99_ms']:.0f} ms."
        )
    gpu = benches.get("gpu") or {}
    if "skipped" in gpu:
        lines.append(f"GPU: skipped ({gpu['skipped']}).")
    elif "ours" in gpu:
        lines.append(
            f"GPU {gpu['device']}: {gpu['tokens']:,} tokens; ours {gpu['ours']['tokens_per_second']:.0f} tokens/s, "
            f"harness defaults {gpu['harness_defaults']['tokens_per_second']:.0f} tokens/s "
            f"(x{gpu['speedup_ours_over_defaults']:.2f}); compute-bound ratio "
            f"{_f(gpu['ours'].get('compute_bound_ratio'))}."
        )
    for name, bench in benches.items():
        if isinstance(bench, dict) and "error" in bench:
            lines.append(f"**{name} failed**: {bench['error']}")
    missed = [t for t in targets(results) if not t["met"]]
    lines += ["", "## Closing note", ""]
    if not missed:
        lines.append("Every target is met.")
    for t in missed:
        remedy = next((text for key, text in REMEDIES.items() if t["name"].startswith(key)), "")
        lines.append(
            f"- {t['name']}: {_f(t['value'])} against {t['target']}, missed by {_f(t['missed_by'])} "
            f"(x{t['missed_by_factor']:.2f}). What would close it: {remedy}."
        )
    return "\n".join(lines) + "\n"
