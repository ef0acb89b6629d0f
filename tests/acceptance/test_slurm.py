"""Evaluations as Slurm jobs, for real: a single-node Slurm on this machine (brought up by
scripts/ensure-slurm.sh, with fake GPU resources), `leaderboard scheduler` processes with the slurm executor,
the pinned harness on tiny local models over synthesized data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.app import App
from backend.domain import Status
from backend.hub.local_store import LocalModelStore
from backend.leaderboards.config import columns, load_config
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from tests.commands import clean_env, leaderboard

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]
ROOT = Path(__file__).parents[2]
MODELS = ("acme/tiny-one", "acme/tiny-two", "acme/tiny-three")


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """A running single-node Slurm (installed and started when missing); its SLURM_CONF."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-slurm.sh")], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(
            f"Slurm could not be brought up by scripts/ensure-slurm.sh:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout.strip().splitlines()[-1].split("=", 1)[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalModelStore, Path]:
    from backend.evaluation.synthetic import synthesize

    store = LocalModelStore(tmp_path_factory.mktemp("slurm-models"))
    for model in MODELS:
        build_tiny_model(store, model)
    mirror = tmp_path_factory.mktemp("slurm-data-mirror")
    synthesize(mirror)
    return store, mirror


def environment(
    database_url: str, slurm_conf: str, store: LocalModelStore, mirror: Path, work: Path, **extra: str
) -> dict[str, str]:
    env = clean_env(
        SLURM_CONF=slurm_conf,
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(mirror),
        LEADERBOARD_WORK_DIR=str(work),
        LEADERBOARD_RESULTS=str(work.parent / "results"),
        LEADERBOARD_EVAL_LIMIT="1",
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_EVAL_BATCH_SIZE="8",
        LEADERBOARD_EXECUTOR="slurm",
        LEADERBOARD_SLURM_GPUS="1",
        LEADERBOARD_SLURM_CPUS="1",
        LEADERBOARD_SLURM_MEM_GB="3",
        LEADERBOARD_SLURM_TIME_MINUTES="20",
        LEADERBOARD_SCHEDULER_POLL_SECONDS="1",
        LEADERBOARD_HEARTBEAT_SECONDS="2",
        LEADERBOARD_LEASE_SECONDS="120",
    )
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return leaderboard(env, *args, timeout=120)


def submit(env: dict[str, str], model: str) -> int:
    result = cli(env, "submit", model, "--user", "alice", "--model-type", "pretrained", "--json")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["id"])


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], subprocess.Popen[str]]]:
    """Start `leaderboard scheduler` processes; each is stopped (SIGTERM) at the end and must exit cleanly."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(env: dict[str, str], name: str) -> subprocess.Popen[str]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backend.cli",
                    "--log-level",
                    "INFO",
                    "scheduler",
                    "--scheduler-id",
                    name,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the scheduler did not stop on SIGTERM; its log:\n{log.read_text()[-3000:]}")
        if code != -signal.SIGKILL:  # killed on purpose by the test
            assert code == 0, log.read_text()[-3000:]


def slurm_state(env: dict[str, str], job_id: str) -> str:
    """The job's state as the controller reports it (it keeps ended jobs for MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
    )
    return out.stdout.strip()


def wait_for(condition: Callable[[], object], timeout: float, what: str, logs: Path | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tail = ""
    if logs is not None:
        tail = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out waiting for {what}\n{tail}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_three_submitted_models_are_evaluated_as_slurm_jobs_by_two_schedulers_one_killed(
    slurm_conf, assets, database_url, tmp_path, schedulers
):
    store, mirror = assets
    env = environment(database_url, slurm_conf, store, mirror, tmp_path / "work")
    ids = [submit(env, model) for model in MODELS]
    doomed = schedulers(env, "s1")
    schedulers(env, "s2")
    app = App.open(Settings(database_url=database_url))
    # Once every request has its job, one scheduler dies: the other keeps the leases and collects all.
    wait_for(lambda: all(app.requests.get(i).job_id for i in ids), 120, "three jobs", tmp_path)
    doomed.kill()
    doomed.wait()

    def all_ended() -> bool:
        return all(app.requests.get(i).status in (Status.FINISHED, Status.FAILED) for i in ids)

    wait_for(all_ended, 840, "three evaluations", tmp_path)
    average = columns(load_config("open_llm_v2"))[-1]
    requests = [app.requests.get(i) for i in ids]
    assert [r.status for r in requests] == [Status.FINISHED] * 3, [r.failure_reason for r in requests]
    assert all(r.attempts == 1 for r in requests)  # dispatched once each, by one of the two schedulers
    job_ids = [r.job_id for r in requests]
    assert all(j and j.isdigit() for j in job_ids) and len(set(job_ids)) == 3
    assert all(slurm_state(env, str(j)) == "COMPLETED" for j in job_ids)
    evaluations = app.evaluations.all()
    assert sorted(e.request_id for e in evaluations) == sorted(ids)  # each result stored once
    for request, evaluation in zip(requests, sorted(evaluations, key=lambda e: e.request_id), strict=True):
        assert evaluation.worker_id.startswith("slurm:s")
        assert evaluation.scores[average] is not None
        attempt = Path(evaluation.artifacts)
        assert (attempt / "job.sbatch").read_text().count("--gres=gpu:1") == 1
        log = (attempt / "run.log").read_text()  # the job's own log, in the attempt folder
        assert "harness arguments" in log and "Saving results aggregated" in log
        history = [(h.from_status, h.to_status) for h in app.requests.history(request.id)]
        assert history == [
            (None, Status.PENDING),
            (Status.PENDING, Status.RUNNING),
            (Status.RUNNING, Status.FINISHED),
        ]
    app.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancelling_requests_cancels_their_queued_and_running_jobs(
    slurm_conf, assets, database_url, tmp_path, schedulers
):
    store, mirror = assets
    # Two GPUs per job on a node with two: the second job waits in the queue.
    env = environment(database_url, slurm_conf, store, mirror, tmp_path / "work", LEADERBOARD_SLURM_GPUS="2")
    first, second = submit(env, MODELS[0]), submit(env, MODELS[1])
    schedulers(env, "s1")
    app = App.open(Settings(database_url=database_url))

    def jobs_running_and_queued() -> bool:
        jobs = [app.requests.get(i).job_id for i in (first, second)]
        return all(jobs) and [slurm_state(env, str(j)) for j in jobs] == ["RUNNING", "PENDING"]

    wait_for(jobs_running_and_queued, 120, "one running and one queued job", tmp_path)
    running_job, queued_job = (str(app.requests.get(i).job_id) for i in (first, second))
    for request_id in (second, first):
        result = cli(env, "admin", "cancel", str(request_id))
        assert result.returncode == 0, result.stderr
    wait_for(
        lambda: [slurm_state(env, j) for j in (running_job, queued_job)] == ["CANCELLED", "CANCELLED"],
        30,
        "both jobs cancelled",
    )
    time.sleep(3)  # a few scheduler rounds: nothing is collected, retried or dispatched again
    for request_id in (first, second):
        request = app.requests.get(request_id)
        assert request.status is Status.CANCELLED and request.attempts == 1
    assert app.evaluations.all() == []
    app.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_cancelled_behind_the_backends_back_is_retried_and_then_finished(
    slurm_conf, assets, database_url, tmp_path, schedulers
):
    store, mirror = assets
    env = environment(database_url, slurm_conf, store, mirror, tmp_path / "work", LEADERBOARD_SLURM_CPUS="2")
    request_id = submit(env, MODELS[2])
    schedulers(env, "s1")
    app = App.open(Settings(database_url=database_url))

    def running_job() -> str | None:
        job = app.requests.get(request_id).job_id
        return job if job and slurm_state(env, job) == "RUNNING" else None

    first_job = str(wait_for(running_job, 120, "the job to run", tmp_path))
    subprocess.run(["scancel", first_job], env=env, check=True)
    wait_for(
        lambda: app.requests.get(request_id).status is Status.FINISHED,
        400,
        "the retried evaluation",
        tmp_path,
    )
    request = app.requests.get(request_id)
    assert request.attempts == 2 and request.job_id != first_job
    assert slurm_state(env, first_job) == "CANCELLED" and slurm_state(env, str(request.job_id)) == "COMPLETED"
    history = app.requests.history(request_id)
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, Status.PENDING),
        (Status.PENDING, Status.RUNNING),
        (Status.RUNNING, Status.PENDING),
        (Status.PENDING, Status.RUNNING),
        (Status.RUNNING, Status.FINISHED),
    ]
    assert "the Slurm job was cancelled outside the backend" in str(history[2].reason)
    assert "attempt 1 of 3" in str(history[2].reason)
    (evaluation,) = app.evaluations.all()
    assert evaluation.request_id == request_id and evaluation.attempt == 2
    app.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scheduler_stops_its_own_orphans_and_never_another_deployment_s_jobs(
    database_url, slurm_conf, tmp_path
):
    """Two deployments (staging and production, say) under one cluster user: each job name carries its
    deployment, so a scheduler takes only its own jobs without a request for orphans."""
    from backend.executors.interface import deployment_tag, job_name

    work, other_work = tmp_path / "work", tmp_path / "other-deployment"
    env = clean_env(
        SLURM_CONF=slurm_conf,
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_WORK_DIR=str(work),
        LEADERBOARD_EXECUTOR="slurm",
    )

    def sbatch(name: str) -> str:
        done = subprocess.run(
            ["sbatch", "--parsable", f"--job-name={name}", "--cpus-per-task=1", f"--output={tmp_path}/%j.log",
             "--wrap", "sleep 300"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def alive(job_id: str) -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
        )
        return out.stdout.strip() in ("PENDING", "RUNNING", "CONFIGURING")

    theirs = sbatch(job_name(deployment_tag(other_work), 1, "slurm:elsewhere:tok1"))
    ours = sbatch(job_name(deployment_tag(work), 1, "slurm:here:tok2"))  # no request 1 in this database
    try:
        done = leaderboard(env, "scheduler", "--once", "--scheduler-id", "s1", timeout=300)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 60
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(1)
        assert not alive(ours), "the scheduler left its own orphan running"
        assert alive(theirs), "the scheduler stopped another deployment's job"
    finally:
        subprocess.run(["scancel", theirs, ours], env=env, capture_output=True)
