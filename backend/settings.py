"""Every setting, declared once: read from LEADERBOARD_* environment variables, shown by
`leaderboard settings` and documented in README.md (a test keeps the two in step)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.errors import ConfigurationError


class Settings(BaseSettings):
    # Inputs are left out of validation errors: a secret (LEADERBOARD_OAUTH_CLIENT_SECRET) is never shown.
    model_config = SettingsConfigDict(
        env_prefix="LEADERBOARD_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: str = Field(
        "sqlite:///leaderboard.db",
        description="SQLAlchemy URL of the database: SQLite (embedded default, a file in the working folder) "
        "or PostgreSQL (postgresql+psycopg://user@host/db) in production.",
    )
    database_pool_size: int = Field(
        20,
        ge=1,
        le=1000,
        description="PostgreSQL connections each process keeps open (a server's threads share them); more "
        "concurrent transactions than this open extra connections, up to LEADERBOARD_DATABASE_MAX_OVERFLOW.",
    )
    database_max_overflow: int = Field(
        20,
        ge=0,
        le=1000,
        description="PostgreSQL connections opened beyond the pool under load, closed again when returned.",
    )
    model_store: Path | None = Field(
        None,
        description="A folder in the Hugging Face hub cache layout to read models from instead of the Hub "
        "(air-gapped clusters, tests). Unset: the Hub.",
    )
    results: str = Field(
        "results",
        description="Where results are published: a local folder, or hf://datasets/ORG/NAME.",
    )
    rate_limit_count: int = Field(
        5, ge=1, description="Submissions allowed per model namespace (org or user) per rolling window."
    )
    rate_limit_days: float = Field(7.0, gt=0, description="Length of the rate-limit window, in days.")
    max_params_b: float = Field(
        100.0, gt=0, description="Largest model accepted in float16/bfloat16, in billions of parameters."
    )
    max_params_b_quantized: float = Field(
        140.0,
        gt=0,
        description="Base size limit for quantized submissions, in billions of parameters; multiplied by 2 "
        "for 8bit, 4 for 4bit and by bits for GPTQ (2:8, 3:6, 4:4, 8:2).",
    )
    min_card_chars: int = Field(200, ge=0, description="Shortest model card text accepted, in characters.")
    lease_seconds: float = Field(
        600.0,
        gt=0,
        description="A running request whose worker has not heart-beaten for this long goes back to the "
        "queue (or fails after max_attempts).",
    )
    heartbeat_seconds: float = Field(30.0, gt=0, description="How often a worker heart-beats its lease.")
    max_attempts: int = Field(
        3, ge=1, description="Runs a request may start before a lost worker or transient error fails it."
    )
    max_page_size: int = Field(500, ge=1, description="Most rows one queue listing returns.")
    api_hub_auth: bool = Field(
        True,
        description="The HTTP API accepts Hugging Face tokens, verified with the Hub's whoami (HF_ENDPOINT). "
        "Off: API tokens only (air-gapped deployments).",
    )
    api_admins: str = Field(
        "",
        description="Hub user names (comma-separated) who are admins when they call with a Hugging Face token.",
    )
    api_token_cache_seconds: float = Field(
        60.0, ge=0, description="How long a Hugging Face token's whoami answer is reused."
    )
    api_max_body_bytes: int = Field(
        65536, ge=1024, description="Largest request body the HTTP API reads, in bytes; larger gets 413."
    )
    api_votes_per_minute: int = Field(
        60, ge=1, description="Votes and vote withdrawals one user may make per minute through the API."
    )
    api_submissions_per_hour: int = Field(
        20,
        ge=1,
        description="Submissions one user may make per hour through the API (on top of the per-namespace limit).",
    )
    api_signins_per_minute: int = Field(
        10, ge=1, description="Sign-in attempts on the pages' sign-in form per client address per minute."
    )
    session_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="The key that signs the pages' sign-in cookies (at least 32 characters; keep it secret). "
        "Unset: a key of the server process, so sign-ins end when it restarts.",
    )
    session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="How long a sign-in to the pages lasts (while its token is valid).",
    )
    oauth_client_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="The client id of the leaderboard's OAuth app on the Hub: the sign-in page offers "
        '"Sign in with Hugging Face". Unset: sign-in with a token only.',
    )
    oauth_client_secret: SecretStr | None = Field(
        None,
        description="The client secret of that OAuth app, set with LEADERBOARD_OAUTH_CLIENT_ID (keep it "
        "secret: it is never logged or shown).",
    )
    oauth_endpoint: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The Hub that signs people in (its /oauth/authorize, /oauth/token and /oauth/userinfo), "
        "for a private Hub. Unset: HF_ENDPOINT (https://huggingface.co).",
    )
    oauth_scopes: str = Field(
        "openid profile",
        pattern=r"^[\x21-\x7e]+( [\x21-\x7e]+)*$",
        description="The OAuth scopes asked of the Hub, space-separated; with openid (the sign-in reads only "
        "the user name).",
    )
    config: str = Field(
        "open_llm_v2",
        description="The leaderboard config the worker evaluates with: a name in leaderboard_configs/ or a path.",
    )
    judged: str = Field(
        "",
        pattern=r"^[^\s,]*(,[^\s,]+)*$",
        description="Judged leaderboards the deployment also serves, comma-separated names in "
        "leaderboard_configs/ or paths (e.g. alpaca_eval_2,pandalm): every request is evaluated on each, "
        "after LEADERBOARD_CONFIG. Unset: none.",
    )
    judge_base_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The OpenAI-compatible endpoint an endpoint judge calls (its /v1 URL, e.g. a vLLM server "
        "or `leaderboard serve-models`). Unset: judged leaderboards with an endpoint judge cannot run.",
    )
    judge_model: str | None = Field(
        None,
        pattern=r"^[\x21-\x7e]{1,200}$",
        description="The endpoint judge's model name, in place of the judged config's `judge.model` (recorded: "
        "it is part of every judgement's cache key).",
    )
    judge_api_key: SecretStr | None = Field(
        None,
        description="The key sent to the judge endpoint (`Authorization: Bearer`); never logged nor written "
        "to a run's files.",
    )
    judge_concurrency: int = Field(
        4, ge=1, le=256, description="Judgements an endpoint judge has in flight at once."
    )
    judge_price_input_per_1k: float | None = Field(
        None,
        ge=0,
        description="The judge endpoint's price per 1,000 prompt tokens, for price_per_example. Unset: unknown.",
    )
    judge_price_output_per_1k: float | None = Field(
        None,
        ge=0,
        description="The judge endpoint's price per 1,000 completion tokens, for price_per_example.",
    )
    judge_cache: Path | None = Field(
        None,
        description="The durable judgement cache (SQLite): a judgement made once is never made again. Unset: "
        "judgements.sqlite in LEADERBOARD_WORK_DIR.",
    )
    data_mirror: Path | None = Field(
        None,
        description="A benchmark data mirror folder (`leaderboard data mirror` or `data synthesize`) read "
        "instead of the Hub. Unset: the Hub, at the pinned dataset revisions.",
    )
    work_dir: Path = Field(
        Path(".leaderboard/work"),
        description="Where runs keep their logs, request caches and outputs, and where evaluations are stored.",
    )
    eval_backend: str = Field("hf", pattern="^(hf|vllm)$", description="Harness model backend: hf or vllm.")
    eval_device: str = Field(
        "auto", description="Device for evaluation: auto (cuda when available, else cpu), cpu, cuda, cuda:N."
    )
    eval_batch_size: str | None = Field(
        None,
        pattern=r"^(auto|auto:\d+|\d+)$",
        description="Harness batch size (auto, auto:N or a number), overriding the leaderboard config's policy.",
    )
    eval_max_batch_size: int | None = Field(
        None,
        ge=1,
        description="Largest batch the auto batch size may pick, overriding the leaderboard config.",
    )
    eval_limit: int | None = Field(
        None,
        ge=1,
        description="Documents per subtask (for demos and tests). Unset: the whole benchmark; results of a "
        "limited run are marked as such.",
    )
    eval_timeout_seconds: float = Field(
        48 * 3600.0, gt=0, description="Hard limit on one evaluation run; the run is killed past it."
    )
    worker_poll_seconds: float = Field(
        30.0, gt=0, description="How long an idle worker waits between claims."
    )
    store_retry_attempts: int = Field(
        8,
        ge=1,
        description="Attempts to record an ended run (its result with the FINISHED transition, or its failure) "
        "while the database is unavailable; the result is on disk, so it is kept, not re-run.",
    )
    store_retry_base_seconds: float = Field(
        1.0,
        ge=0,
        description="Wait before the second attempt to record an ended run; doubles with each attempt.",
    )
    store_retry_max_seconds: float = Field(
        60.0, ge=0, description="Longest wait between two attempts to record an ended run."
    )
    publish_after_evaluation: bool = Field(
        False,
        description="The worker publishes to LEADERBOARD_RESULTS after each evaluation it stores; a failed "
        "publish is logged and its results wait in the outbox for the next publish.",
    )
    publish_retry_attempts: int = Field(
        4,
        ge=1,
        description="Attempts per Hub commit when it fails transiently (connection error, timeout, 429, 5xx).",
    )
    publish_retry_base_seconds: float = Field(
        2.0, ge=0, description="Wait before the second attempt of a Hub commit; doubles with each attempt."
    )
    publish_retry_max_seconds: float = Field(
        60.0, ge=0, description="Longest wait between two attempts of a Hub commit."
    )
    executor: str = Field(
        "local",
        pattern="^(local|slurm)$",
        description="Where the scheduler runs evaluations: local (child processes on this machine) or slurm "
        "(one sbatch job per run).",
    )
    local_slots: int = Field(1, ge=1, description="Evaluations the local executor runs at once.")
    local_gpus: str | None = Field(
        None,
        pattern=r"^\d+(,\d+)*$",
        description="GPU ids for the local executor's slots, one per slot, comma-separated (slot i sees only "
        "GPU i through CUDA_VISIBLE_DEVICES). Unset: runs see every GPU, or the CPU.",
    )
    slurm_partition: str | None = Field(None, description="Slurm partition of evaluation jobs (sbatch -p).")
    slurm_account: str | None = Field(
        None, description="Slurm account charged for evaluation jobs (sbatch -A)."
    )
    slurm_gpus: int = Field(1, ge=0, description="GPUs per evaluation job (sbatch --gres=gpu:N).")
    slurm_cpus: int = Field(8, ge=1, description="CPUs per evaluation job (sbatch --cpus-per-task).")
    slurm_mem_gb: int | None = Field(
        None,
        ge=1,
        description="Memory per evaluation job, in GB (sbatch --mem). Unset: the partition's default.",
    )
    slurm_time_minutes: int | None = Field(
        None,
        ge=1,
        description="Time limit of an evaluation job (sbatch --time). Unset: LEADERBOARD_EVAL_TIMEOUT_SECONDS.",
    )
    slurm_extra_options: str | None = Field(
        None, description="More sbatch options, as on a command line (e.g. `--qos=high --constraint=a100`)."
    )
    slurm_size_classes: str | None = Field(
        None,
        description="Resources by model size, a JSON list of objects with min_params_b and any of gpus, cpus, "
        "mem_gb, time_minutes, partition, extra_options: the largest class a model reaches overrides the "
        'defaults above (e.g. `[{"min_params_b": 30, "gpus": 4, "mem_gb": 256}]`).',
    )
    slurm_max_jobs: int = Field(
        8, ge=1, description="Evaluation jobs the schedulers keep in Slurm at once (queued or running)."
    )
    scheduler_poll_seconds: float = Field(
        15.0, gt=0, description="How often the scheduler dispatches requests and collects finished runs."
    )
    scheduler_publish_seconds: float = Field(
        300.0, gt=0, description="How often the scheduler publishes the outbox to LEADERBOARD_RESULTS."
    )
    scheduler_metadata_seconds: float = Field(
        3600.0,
        gt=0,
        description="How often the scheduler refreshes the Hub metadata (likes, availability, license) of "
        "queued and finished models.",
    )
    scheduler_requests_export_seconds: float = Field(
        600.0,
        gt=0,
        description="How often the scheduler exports the requests and votes to LEADERBOARD_REQUESTS_EXPORT_DIR.",
    )
    requests_export_dir: Path | None = Field(
        None,
        description="A folder the scheduler keeps the requests and votes in (`leaderboard requests "
        "export` layout). Unset: no requests_export job.",
    )
    serve_host: str = Field(
        "127.0.0.1",
        description="Interface `leaderboard serve-models` listens on (the OpenAI-compatible model endpoint); "
        "anything but 127.0.0.1 wants LEADERBOARD_SERVE_API_KEY.",
    )
    serve_port: int = Field(8001, ge=0, le=65535, description="Port `leaderboard serve-models` listens on.")
    serve_models: str = Field(
        "",
        description="The models `leaderboard serve-models` serves, comma-separated ORG/NAME or "
        "ORG/NAME@REVISION (from LEADERBOARD_MODEL_STORE). Unset: every model of the store, at main.",
    )
    serve_api_key: SecretStr | None = Field(
        None,
        min_length=16,
        description="The key every call to the model endpoint must send (`Authorization: Bearer <key>`; at "
        "least 16 characters, keep it secret). Unset: no key, for the embedded default on 127.0.0.1.",
    )
    serve_device: str = Field(
        "auto",
        description="Device the model endpoint runs models on: auto (cuda when available), cpu, cuda, cuda:N.",
    )
    serve_max_loaded_models: int = Field(
        2,
        ge=1,
        description="Models the endpoint keeps loaded (the least recently used is unloaded past it); also the "
        "models that generate at once.",
    )
    serve_max_tokens: int = Field(
        1024,
        ge=1,
        description="Most tokens one chat completion of the model endpoint may ask for (max_tokens).",
    )
    serve_max_messages: int = Field(
        128, ge=1, description="Most messages one chat completion request may hold."
    )
    serve_max_prompt_chars: int = Field(
        100_000,
        ge=1,
        description="Most characters the messages of one chat completion request may hold in all.",
    )
    serve_max_pending: int = Field(
        32,
        ge=1,
        description="Chat completions the model endpoint takes at once (running or waiting); more get 503 "
        "with Retry-After.",
    )

    arena: str | None = Field(
        None,
        description="The arena the deployment serves: an arena config's name in leaderboard_configs/ or a path "
        "to one (kind: arena). Unset: no arena.",
    )
    arena_daily_votes: int = Field(
        200,
        ge=1,
        description="Arena votes one user may cast per UTC day; more are refused until the next day.",
    )
    arena_battles_per_minute: int = Field(
        10,
        ge=1,
        description="Arena battles started and turns asked (each costs a generation) per client address per "
        "minute; the address is the connection's, never a header the client sets.",
    )
    arena_votes_per_minute: int = Field(30, ge=1, description="Arena votes per client address per minute.")
    arena_few_battles_weight: float = Field(
        0.5,
        ge=0,
        description="Pairing: a pair's weight is multiplied by ((1 + n_a)(1 + n_b))^-w for models with n_a and "
        "n_b rated battles, so models with few battles meet more often (0: battle counts do not matter).",
    )
    arena_close_rating_weight: float = Field(
        1.0,
        ge=0,
        description="Pairing: a pair's weight is multiplied by exp(-w * abs(r_a - r_b) / 100) for ratings r, so "
        "close ratings meet more often (0: ratings do not matter).",
    )
    arena_ratings_seconds: float = Field(
        30.0,
        ge=0,
        description="The arena's ratings (and the pairing's) are refitted from the votes at most this often; "
        "between fits the last one is shown with the number of votes it counted.",
    )
    arena_max_turns: int = Field(
        8, ge=1, le=100, description="Turns (prompt and two answers) one live arena battle may have."
    )
    arena_max_prompt_chars: int = Field(
        8000,
        ge=1,
        le=200_000,
        description="Longest prompt a user may send in an arena battle, in characters.",
    )

    @model_validator(mode="after")
    def _oauth_app_is_whole(self) -> Settings:
        if (self.oauth_client_id is None) != (self.oauth_client_secret is None):
            raise ValueError(
                "set both LEADERBOARD_OAUTH_CLIENT_ID and LEADERBOARD_OAUTH_CLIENT_SECRET (the Hub OAuth app's "
                "id and secret), or neither"
            )
        if "openid" not in self.oauth_scopes.split():
            raise ValueError("LEADERBOARD_OAUTH_SCOPES must include openid (the Hub names the user with it)")
        return self

    @property
    def judged_leaderboards(self) -> tuple[str, ...]:
        """The judged leaderboards served beside LEADERBOARD_CONFIG, in order."""
        return tuple(name for name in self.judged.split(",") if name)

    @property
    def oauth_configured(self) -> bool:
        """Whether people may sign in to the pages with their Hugging Face account."""
        return self.oauth_client_id is not None and self.oauth_client_secret is not None


def env_name(field_name: str) -> str:
    return f"LEADERBOARD_{field_name.upper()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{env_name(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) for every setting, for --help and the docs."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = "" if info.default is None else str(info.default)
        rows.append((env_name(name), default, info.description or ""))
    return rows
