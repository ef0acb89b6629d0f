"""One root exception; every subclass's docstring is its default message and says what to do.

Driver and Hub errors are translated into these at the edge (``raise X(...) from exc``) so that the CLI
and the HTTP API render every failure the same way: a ``code``, a message a person can act on, and an
HTTP status for the API.
"""

from __future__ import annotations

from datetime import datetime


class LeaderboardError(Exception):
    """Something went wrong in the leaderboard backend."""

    http_status: int = 500
    code: str = "error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or " ".join((self.__doc__ or self.__class__.__name__).split())
        super().__init__(self.message)


class ConfigurationError(LeaderboardError):
    """A setting is invalid: check the LEADERBOARD_* environment variables (`leaderboard settings`)."""

    http_status = 500
    code = "configuration"


class SubmissionRejected(LeaderboardError):
    """The submission failed a check: fix what the message names and submit again."""

    http_status = 422
    code = "submission_rejected"

    def __init__(self, rule: str, problem: str, fix: str) -> None:
        self.rule = rule
        self.problem = problem
        self.fix = fix
        super().__init__(f"rejected by rule '{rule}': {problem}. Fix: {fix}")


class AlreadySubmitted(SubmissionRejected):
    """This model, commit and precision is already queued, running or evaluated."""

    http_status = 409
    code = "already_submitted"

    def __init__(
        self, model: str, sha: str, precision: str, request_id: int | None, status: str | None
    ) -> None:
        self.request_id = request_id
        where = f" as request {request_id} ({status})" if request_id is not None else ""
        super().__init__(
            "duplicate",
            f"{model} at commit {sha} in {precision} is already submitted{where}",
            "upvote the existing request instead (`leaderboard vote REQUEST`), or submit another commit "
            "or precision",
        )


class RequestNotFound(LeaderboardError):
    """No such request: list requests with `leaderboard queue`."""

    http_status = 404
    code = "request_not_found"


class IllegalTransition(LeaderboardError):
    """The request is not in a status that allows this change: look at its status with `leaderboard queue`."""

    http_status = 409
    code = "illegal_transition"


class LeaseLost(LeaderboardError):
    """This worker no longer holds the request (its lease expired or it was cancelled): stop working on it."""

    http_status = 409
    code = "lease_lost"


class AlreadyVoted(LeaderboardError):
    """You have already voted for this request: each user has one vote per request."""

    http_status = 409
    code = "already_voted"


class NotVoted(LeaderboardError):
    """You have not voted for this request, so there is no vote to withdraw."""

    http_status = 409
    code = "not_voted"


class VotingClosed(LeaderboardError):
    """Votes are only taken for pending requests; this one is no longer waiting in the queue."""

    http_status = 409
    code = "voting_closed"


class InvalidInput(LeaderboardError):
    """A value given is not valid: the message names the field and the values it accepts."""

    http_status = 422
    code = "invalid_input"


class FieldInvalid(InvalidInput):
    """A field of a page's form is not valid: the page shows the message next to that field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class ModelSourceError(LeaderboardError):
    """The model metadata source (the Hub or the local model store) could not answer: try again later."""

    http_status = 503
    code = "model_source_unavailable"


class ModelNotFound(ModelSourceError):
    """No model repository with this id: check the spelling, and that the repository is public."""

    http_status = 404
    code = "model_not_found"


class RevisionNotFound(ModelSourceError):
    """The repository has no such branch, tag or commit: give an existing revision."""

    http_status = 404
    code = "revision_not_found"


class ModelAccessDenied(ModelSourceError):
    """The repository is gated or private: only public models can be evaluated."""

    http_status = 403
    code = "model_access_denied"


class RequestsFileError(LeaderboardError):
    """A file of the requests export is not in the expected layout: the message names the file and field."""

    http_status = 422
    code = "requests_file"


class Unauthorized(LeaderboardError):
    """A valid bearer token is needed: send `Authorization: Bearer <token>` with a Hugging Face token or an
    API token from `leaderboard admin token create USER`."""

    http_status = 401
    code = "unauthorized"


class Forbidden(LeaderboardError):
    """Your token is valid but does not allow this: admin endpoints need an admin token."""

    http_status = 403
    code = "forbidden"


class TokenNotFound(LeaderboardError):
    """No such API token: list tokens with `leaderboard admin token list`."""

    http_status = 404
    code = "token_not_found"


class RateLimited(LeaderboardError):
    """Too many requests of this kind from you: wait and try again (the Retry-After header says how long)."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str | None = None, retry_after_s: float = 60.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class IdentityUnavailable(LeaderboardError):
    """The Hub could not verify this Hugging Face token now: try again later, or use an API token."""

    http_status = 503
    code = "identity_unavailable"


class AlreadyListed(LeaderboardError):
    """This entry is already on the list: nothing to add (see `leaderboard admin list`)."""

    http_status = 409
    code = "already_listed"


class NotListed(LeaderboardError):
    """This entry is not on the list, so there is nothing to remove (see `leaderboard admin list`)."""

    http_status = 404
    code = "not_listed"


class RateLimitReached(SubmissionRejected):
    """The model's namespace has used up its submissions for the rolling window: wait until the oldest one
    leaves it, or ask an admin to register the namespace as an official provider."""

    def __init__(
        self, namespace: str, count: int, limit: int, window_days: float, frees_at: datetime
    ) -> None:
        self.namespace = namespace
        self.count = count
        self.limit = limit
        self.window_days = window_days
        self.frees_at = frees_at
        super().__init__(
            "rate-limit",
            f"namespace '{namespace}' already has {count} submissions in the last {window_days:g} days "
            f"(limit {limit})",
            f"wait until {frees_at:%Y-%m-%d %H:%M:%S} UTC, when the oldest one leaves the window, or ask an "
            "admin to register the namespace as an official provider",
        )


class UnsupportedRun(LeaderboardError):
    """This combination of backend, precision and weight type cannot be evaluated: the message says which."""

    http_status = 422
    code = "unsupported_run"


class MirrorError(LeaderboardError):
    """The data mirror is missing files or damaged: rebuild it with `leaderboard data mirror` (or
    `leaderboard data synthesize` for test data)."""

    http_status = 500
    code = "data_mirror"


class DatasetSourceError(LeaderboardError):
    """The Hub could not give a dataset: check the repository id, your token and the dataset's terms, then
    try again."""

    http_status = 503
    code = "dataset_source_unavailable"


class RescoreError(LeaderboardError):
    """Stored samples cannot be re-scored: the message names the task and the missing or unreadable file;
    re-run the evaluation when its per-sample outputs are gone."""

    http_status = 422
    code = "rescore_failed"


class PrecisionUnavailable(LeaderboardError):
    """This machine lacks the library a quantized precision loads with: an admin installs it (the message
    says how) and requeues the request."""

    http_status = 503
    code = "precision_unavailable"


class TaskSetError(LeaderboardError):
    """The task set manifest is malformed: fix the file and field the message names."""

    http_status = 500
    code = "task_set_invalid"


class HarnessMismatch(LeaderboardError):
    """The installed lm-eval is not the one the project pins: install the version it names."""

    http_status = 500
    code = "harness_mismatch"


class DatasetNotPinned(LeaderboardError):
    """A dataset has no pinned revision: run `leaderboard data pin` where the Hub is reachable, or evaluate
    from a data mirror."""

    http_status = 500
    code = "dataset_not_pinned"


class ExecutorError(LeaderboardError):
    """The executor could not start or reach a job: check the executor settings (LEADERBOARD_EXECUTOR,
    LEADERBOARD_SLURM_*) and that the cluster answers (`sinfo`)."""

    http_status = 503
    code = "executor_unavailable"


class AlreadyEvaluated(LeaderboardError):
    """This request already has a stored evaluation for this leaderboard; it is never recorded twice."""

    http_status = 409
    code = "already_evaluated"


class VersionConflict(LeaderboardError):
    """Another re-score stored this version of the result first: run the re-score again."""

    http_status = 409
    code = "version_conflict"


class DatabaseUnavailable(LeaderboardError):
    """The database cannot be reached: check LEADERBOARD_DATABASE_URL and that the server is running."""

    http_status = 503
    code = "database_unavailable"


class ResultsFormatError(LeaderboardError):
    """The evaluation results lack a value the leaderboard needs, or hold one that is not a number: the
    message names the task and metric; pass the results_<time>.json lm-eval wrote, or rerun the evaluation."""

    http_status = 422
    code = "results_format"


class IncompleteResults(ResultsFormatError):
    """The evaluation results lack tasks the leaderboard config needs: the message names them; run the
    missing tasks (or allow missing benchmarks to publish the ones that are there)."""

    http_status = 422
    code = "results_incomplete"


class LeaderboardConfigError(LeaderboardError):
    """A leaderboard config is missing or invalid: the message names the file and the field; fix the YAML
    (leaderboard_configs/open_llm_v2.yaml shows every field)."""

    http_status = 500
    code = "leaderboard_config"


class RepoFileRefused(LeaderboardError):
    """A file of the model repository is not read: it is larger than the limit for its kind, or not a
    regular file inside the repository (a link leaving it). Replace it with a regular file within the limit."""

    http_status = 422
    code = "repo_file_refused"

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"{filename} is refused: {problem}")


class RepoFileInvalid(LeaderboardError):
    """A file of the model repository lacks the fields or types its format requires: fix what the message
    names."""

    http_status = 422
    code = "repo_file_invalid"

    def __init__(self, filename: str, problem: str, fix: str) -> None:
        self.filename = filename
        self.problem = problem
        self.fix = fix
        super().__init__(f"{filename} is not valid: {problem}. Fix: {fix}")


class PublishFailed(LeaderboardError):
    """The results could not be delivered to the target: they stay in the outbox; fix the cause (the
    message says it) and run `leaderboard publish` again."""

    http_status = 502
    code = "publish_failed"


class NothingPublished(PublishFailed):
    """Nothing is published at the configured target yet: run `leaderboard publish` first."""

    http_status = 404
    code = "nothing_published"


class PublishedFileNotFound(LeaderboardError):
    """No such file in the published results dataset: the result pages link each version's files, which
    appear with the publish after the version was recorded."""

    http_status = 404
    code = "published_file_not_found"


class UnsafePath(LeaderboardError):
    """A path built from data would not be a plain name inside its folder: nothing is written there. The
    record it came from has an id that is not valid; fix or remove that record."""

    http_status = 400
    code = "unsafe_path"


class OAuthRefused(LeaderboardError):
    """The Hub did not sign you in (you declined, or the sign-in expired): sign in again, or with an API
    token."""

    http_status = 400
    code = "oauth_refused"


class OAuthUnavailable(LeaderboardError):
    """The Hub cannot sign you in now (it cannot be reached, or it is failing): try again later, or sign in
    with an API token."""

    http_status = 503
    code = "oauth_unavailable"


class OAuthFailed(LeaderboardError):
    """The Hub's answer to the sign-in is not one the leaderboard can use, or the Hub refuses this
    deployment's OAuth app: an admin checks LEADERBOARD_OAUTH_CLIENT_ID and LEADERBOARD_OAUTH_CLIENT_SECRET;
    meanwhile, sign in with an API token."""

    http_status = 502
    code = "oauth_failed"


class AnnotationsInvalid(LeaderboardError):
    """The annotations file is not in AlpacaEval's format (a JSON list of records with instruction, output_1,
    generator_1, output_2, generator_2 and preference): fix what the message names and score it again."""

    http_status = 422
    code = "annotations_invalid"

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")


class JudgedDataInvalid(LeaderboardError):
    """A judged leaderboard's instructions or reference outputs are not what its config says (a column
    missing, a value of the wrong type or size, an instruction without a reference output): the message
    names the dataset, the row and the rule; fix the config's fields or rebuild the mirror from the Hub."""

    http_status = 500
    code = "judged_data_invalid"


class GlmTableInvalid(LeaderboardError):
    """The length-controlled GLM table is not AlpacaEval's df_gamed.csv (columns index,
    instruction_difficulty, not_gamed_baseline, std_delta_len, preference): pass that file, unchanged."""

    http_status = 422
    code = "glm_table_invalid"

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")


class ChatRequestInvalid(LeaderboardError):
    """The chat completion request is not valid: the message names the field (its `param`) and the values it
    accepts; fix it and send it again."""

    http_status = 400
    code = "chat_request_invalid"

    def __init__(self, message: str, param: str | None = None, reason: str = "invalid_value") -> None:
        self.param = param
        self.reason = reason  # OpenAI's error code: invalid_value, invalid_json, context_length_exceeded...
        super().__init__(message)


class ModelOutputsInvalid(LeaderboardError):
    """A model outputs file (AlpacaEval's model_outputs.json, or a generation's progress file) is not in the
    expected layout or belongs to another generation: fix or remove what the message names."""

    http_status = 422
    code = "model_outputs_invalid"

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")


class ModelNotServable(LeaderboardError):
    """The model cannot be served: the message says why (no config, no safetensors weights, a config that
    needs custom code); serve a model that transformers loads with trust_remote_code=False from safetensors."""

    http_status = 400
    code = "model_not_servable"


class NoChatTemplate(ModelNotServable):
    """The model's tokenizer has no chat template, so a conversation cannot be turned into its prompt: serve a
    chat model (one whose tokenizer_config.json or chat_template.jinja has a template)."""

    http_status = 400
    code = "no_chat_template"


class ServingKeyRefused(LeaderboardError):
    """The model server needs its key: send `Authorization: Bearer <key>` with the key it was started with
    (LEADERBOARD_SERVE_API_KEY)."""

    http_status = 401
    code = "invalid_api_key"


class ServerBusy(LeaderboardError):
    """The model server has as many requests in progress as it takes (LEADERBOARD_SERVE_MAX_PENDING): send
    the request again in a moment."""

    http_status = 503
    code = "server_busy"


class ChatEndpointUnavailable(LeaderboardError):
    """The chat endpoint did not answer after every attempt (connection errors, timeouts, 429 or 5xx): check
    that it is running (`leaderboard serve-models`, or the vLLM server) at the URL configured, then run again."""

    http_status = 503
    code = "chat_endpoint_unavailable"


class ChatEndpointRefused(LeaderboardError):
    """The chat endpoint refused the request, or answered with something that is not a chat completion: the
    message gives its status and reason; fix the model name, key or request it names."""

    http_status = 502
    code = "chat_endpoint_refused"

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        self.status = status  # the endpoint's HTTP status (None: its answer was not a chat completion)
        self.reason = reason  # the endpoint's error code, when it gave one
        super().__init__(message)


class LeaderboardNotFound(LeaderboardError):
    """No leaderboard of that name is served here: GET /api/leaderboards lists the deployment's."""

    http_status = 404
    code = "leaderboard_not_found"


class JudgementCacheInvalid(LeaderboardError):
    """The judgement cache file cannot be used (not SQLite, another schema, or a row that fails its checks):
    move the file aside (or delete the row the message names) and judge again; nothing else is lost."""

    http_status = 500
    code = "judgement_cache_invalid"

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")


class JudgePromptInvalid(LeaderboardError):
    """The judge's prompt template cannot be used (missing, not UTF-8, or without the placeholders the judge
    fills): restore the file under tasks/judges/ from the repository."""

    http_status = 500
    code = "judge_prompt_invalid"


class JudgeNotLoadable(LeaderboardError):
    """The local judge model cannot be loaded: give a folder (or a Hub cache entry at a pinned commit) with
    config.json, safetensors weights and a tokenizer that transformers loads with trust_remote_code=False."""

    http_status = 500
    code = "judge_not_loadable"


class BattlesInvalid(LeaderboardError):
    """The battles file is not in the public Chatbot Arena's format (records with model_a, model_b and winner:
    model_a, model_b, tie or tie (bothbad)) as .json, .jsonl, .csv or .parquet: fix what the message names and
    rate it again."""

    http_status = 422
    code = "battles_invalid"

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")


class ArenaNotConfigured(LeaderboardError):
    """This deployment serves no arena: set LEADERBOARD_ARENA to an arena config (kind: arena) with models to
    battle, or a judged leaderboard whose stored answers give static battles."""

    http_status = 404
    code = "arena_not_configured"


class BattleNotFound(LeaderboardError):
    """No such battle of yours: start one with POST /api/arena/battles (a battle is seen only by who
    started it until it is published)."""

    http_status = 404
    code = "battle_not_found"


class BattleRefused(LeaderboardError):
    """The battle cannot take this now: the message names the rule and what to do instead."""

    http_status = 409
    code = "battle_refused"

    def __init__(self, rule: str, problem: str, fix: str) -> None:
        self.rule = rule
        self.problem = problem
        self.fix = fix
        super().__init__(f"refused by rule '{rule}': {problem}. Fix: {fix}")


class NoBattlePossible(LeaderboardError):
    """The arena has no two models to pair for this kind of battle: add models to the arena config (live
    battles), or evaluate models on its judged leaderboard (static battles)."""

    http_status = 409
    code = "no_battle_possible"


class DailyVoteCap(RateLimited):
    """You have cast today's most arena votes (LEADERBOARD_ARENA_DAILY_VOTES): vote again tomorrow (UTC)."""

    code = "daily_vote_cap"
