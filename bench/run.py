"""`python -m bench.run` (`make bench`): every benchmark, one JSON file of figures, a markdown summary.

    python -m bench.run [--size full|tiny] [--only harness,queue,...] [--out bench/results] [--keep]

Writes ``<out>/<date>-<host>.json`` (every figure, the machine and the versions) and prints the summary.
Exits 1 when a benchmark failed (its error is in the JSON); a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCHES = ("harness", "queue", "pages", "publishing", "rescoring", "arena", "arena_votes", "gpu")
RESULTS = Path(__file__).resolve().parent / "results"


def _offline(root: Path) -> None:
    """Nothing downloads: the offline variables are set before datasets or lm-eval is imported."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    os.environ["HF_HOME"] = str(root / "hf-home")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for name in [
        k for k in os.environ if k.startswith("LEADERBOARD_") and k != "LEADERBOARD_BENCH_POSTGRES_URL"
    ]:
        del os.environ[name]  # the benches configure their own settings


def run_all(
    size: str, out: Path, only: tuple[str, ...] = BENCHES, keep: bool = False
) -> tuple[dict[str, Any], Path]:
    """Run the benchmarks, write the JSON file; (results, its path)."""
    import importlib

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="leaderboard-bench-"))
    _offline(root)
    from bench.machine import describe

    now = datetime.now(UTC)
    results: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d"),
        "started_at": now.isoformat(timespec="seconds"),
        "size": size,
        "machine": describe(),
        "benches": {},
    }
    try:
        for name in only:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            module = importlib.import_module(f"bench.{name}")
            try:
                figures = module.run(size, root / name)
            except Exception as exc:  # recorded and reported; the other benches still run
                traceback.print_exc()
                figures = {"error": f"{type(exc).__name__}: {exc}"}
            figures["bench_seconds"] = time.perf_counter() - began
            results["benches"][name] = figures
            if "skipped" in figures:
                print(f"bench: {name} skipped: {figures['skipped']}", file=sys.stderr, flush=True)
            print(f"bench: {name} done in {figures['bench_seconds']:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    results["wall_seconds"] = time.perf_counter() - started
    from bench.report import targets

    results["targets"] = targets(results)
    out.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0] or "host"
    path = out / f"{results['date']}-{host}.json"
    import json

    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: seconds, for tests")
    parser.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (databases, runs)")
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in only if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmarks {unknown}: choose from {', '.join(BENCHES)}")
    # A terminated bench (Ctrl-C, kill) still removes its work folder: SIGTERM unwinds like SystemExit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results, path = run_all(args.size, args.out, only, args.keep)
    from bench.report import markdown

    print(markdown(results))
    print(f"figures: {path}")
    failed = [name for name, figures in results["benches"].items() if "error" in figures]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
