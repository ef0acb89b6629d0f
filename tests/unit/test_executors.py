"""Executors without a cluster: resources per model size, job names, Slurm states -> what the scheduler does."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.errors import ConfigurationError
from backend.evaluation.runner import RunSpec, model_arguments
from backend.executors.interface import JobState, deployment_tag, job_name, parse_job_name
from backend.executors.slurm import EXIT_CODE_FILE, job_status, resources_for
from backend.settings import Settings


def test_resources_come_from_settings_and_the_largest_size_class_a_model_reaches():
    settings = Settings(
        slurm_partition="gpu",
        slurm_account="lab",
        slurm_gpus=1,
        slurm_cpus=8,
        slurm_mem_gb=64,
        slurm_extra_options="--qos=normal",
        eval_timeout_seconds=7200,
        slurm_size_classes='[{"min_params_b": 30, "gpus": 2, "mem_gb": 200},'
        ' {"min_params_b": 60, "gpus": 4, "partition": "big", "extra_options": "--exclusive"}]',
    )
    small = resources_for(settings, 7.0)
    assert small.sbatch_options() == [
        "--cpus-per-task=8",
        "--time=120",
        "--gres=gpu:1",
        "--mem=64G",
        "--partition=gpu",
        "--account=lab",
        "--qos=normal",
    ]
    assert (resources_for(settings, 32.0).gpus, resources_for(settings, 32.0).mem_gb) == (2, 200)
    large = resources_for(settings, 70.0)
    assert (large.gpus, large.mem_gb, large.partition) == (4, 200, "big")
    assert large.extra_options == ("--qos=normal", "--exclusive")
    assert resources_for(settings, None).gpus == 1  # unknown size: the defaults


def test_a_malformed_size_class_setting_says_what_is_expected():
    with pytest.raises(ConfigurationError, match="min_params_b"):
        resources_for(Settings(slurm_size_classes='[{"gpus": 2}]'), 1.0)
    with pytest.raises(ConfigurationError, match="not JSON"):
        resources_for(Settings(slurm_size_classes="gpus=2"), 1.0)


def test_more_than_one_gpu_shards_the_model_or_runs_it_tensor_parallel():
    spec = RunSpec("org/m", "a" * 40, "bfloat16", "Original", None, False, "open_llm_v2", "/o", "/c", gpus=4)
    assert model_arguments(spec, None)["parallelize"] is True
    vllm = RunSpec(
        "org/m",
        "a" * 40,
        "bfloat16",
        "Original",
        None,
        False,
        "open_llm_v2",
        "/o",
        "/c",
        gpus=4,
        backend="vllm",
    )
    assert model_arguments(vllm, None)["tensor_parallel_size"] == 4
    single = RunSpec("org/m", "a" * 40, "bfloat16", "Original", None, False, "open_llm_v2", "/o", "/c")
    assert "parallelize" not in model_arguments(single, None)


def test_job_names_carry_the_deployment_the_request_and_its_lease_token(tmp_path):
    deployment = deployment_tag(tmp_path / "work")
    assert len(deployment) == 8 and deployment == deployment_tag(tmp_path / "x" / ".." / "work")
    assert deployment != deployment_tag(tmp_path / "other-work")
    name = job_name(deployment, 42, "slurm:host-1:abc123")
    assert name == f"leaderboard-{deployment}-r42-abc123"
    assert parse_job_name(name, deployment) == (42, "abc123")
    # Another deployment's job under the same cluster user is not ours, so never an orphan of ours.
    assert parse_job_name(name, deployment_tag(tmp_path / "other-work")) is None
    assert parse_job_name("someone-elses-job", deployment) is None
    assert parse_job_name(f"leaderboard-{deployment}-rx-abc", deployment) is None


@pytest.mark.parametrize(
    ("state", "expected", "transient_failure"),
    [
        ("PENDING", JobState.QUEUED, None),
        ("RUNNING", JobState.RUNNING, None),
        ("COMPLETING", JobState.RUNNING, None),
        ("CANCELLED", JobState.ENDED, True),
        ("PREEMPTED", JobState.ENDED, True),
        ("NODE_FAIL", JobState.ENDED, True),
        ("OUT_OF_MEMORY", JobState.ENDED, True),
        ("COMPLETED", JobState.ENDED, None),
        ("FAILED", JobState.ENDED, None),
        ("TIMEOUT", JobState.ENDED, None),
    ],
)
def test_slurm_states_map_to_what_the_scheduler_does(state, expected, transient_failure, tmp_path: Path):
    status = job_status("7", tmp_path, state, "None")
    assert status.state is expected
    assert (status.failure.transient if status.failure else None) == transient_failure
    assert status.timed_out == (state == "TIMEOUT")


def test_a_job_the_controller_forgot_is_judged_by_its_own_exit_code(tmp_path: Path):
    lost = job_status("7", tmp_path, "", "")
    assert lost.state is JobState.ENDED and lost.failure is not None and lost.failure.transient
    (tmp_path / EXIT_CODE_FILE).write_text("0\n")
    ended = job_status("7", tmp_path, "", "")
    assert ended.state is JobState.ENDED and ended.failure is None and ended.returncode == 0
