"""Two models loading at once in a fresh process (an arena's first battle: both sides ask at the same time)
both load. transformers' lazy module is not thread-safe on first use, so it is resolved under a lock
(backend.serving.models.quiet_transformers); a fresh interpreter is the only place the race shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model

LOAD_BOTH = """
import json, sys, threading
from pathlib import Path
from backend.hub.local_store import LocalModelStore
from backend.serving.models import ModelPool, ServedModel

pool = ModelPool(LocalModelStore(Path(sys.argv[1])), max_loaded=2, device="cpu")
barrier = threading.Barrier(2)
errors = []

def load(repo):
    barrier.wait()
    try:
        pool.get(ServedModel(repo, repo, "main"))
    except Exception as exc:
        errors.append(str(exc))

threads = [threading.Thread(target=load, args=(repo,)) for repo in ("cold/one", "cold/two")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"errors": errors, "loaded": sorted(repo for repo, _ in pool.loaded())}))
"""


def test_two_models_loading_at_once_in_a_fresh_process_both_load(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path / "models")
    build_tiny_model(store, "cold/one", seed=1)
    build_tiny_model(store, "cold/two", seed=2)
    for _ in range(2):  # the race lost most times before the fix; twice makes a pass by luck unlikely
        done = subprocess.run(
            [sys.executable, "-c", LOAD_BOTH, str(store.root)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).parents[2],
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result == {"errors": [], "loaded": ["cold/one", "cold/two"]}
