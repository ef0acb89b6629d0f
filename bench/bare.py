"""A bare harness run, the baseline of bench.harness: `python -m bench.bare SPEC.json`.

Only ``lm_eval.simple_evaluate`` on the task files and arguments the spec names, as someone running the
pinned harness by hand would: no claim, no request cache, nothing saved. Writes the call's own duration
next to the spec.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1])
    spec = json.loads(spec_path.read_text())
    import lm_eval
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        **spec["arguments"],
        task_manager=TaskManager(include_path=spec["tasks_dir"], include_defaults=False),
    )
    seconds = time.perf_counter() - started
    if results is None:
        return 1
    (spec_path.parent / "bare.json").write_text(
        json.dumps({"simple_evaluate_seconds": seconds, "tasks": sorted(results["results"])})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
