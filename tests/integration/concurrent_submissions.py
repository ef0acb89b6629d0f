"""Submits models from many threads at once in a fresh process (run as a module by test_validation).

Prints {model: "accepted" or the rejection} as JSON. The process has not imported transformers before the
threads start: that is the state a freshly started server is in.
"""

from __future__ import annotations

import json
import sys
import threading

from backend.app import App
from backend.domain import ModelType, Submission
from backend.errors import LeaderboardError
from backend.settings import get_settings


def main(models: list[str]) -> None:
    app = App.open(get_settings())
    assert "transformers" not in sys.modules, "the process must start without transformers imported"
    barrier = threading.Barrier(len(models))
    outcomes: dict[str, str] = {}

    def submit(model: str) -> None:
        barrier.wait()
        try:
            app.submissions.submit(Submission(model=model, sender="alice", model_type=ModelType.FINE_TUNED))
            outcomes[model] = "accepted"
        except LeaderboardError as exc:
            outcomes[model] = exc.message

    threads = [threading.Thread(target=submit, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app.close()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(sys.argv[1:])
