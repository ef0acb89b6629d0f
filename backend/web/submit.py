"""The submit page: every field of `leaderboard submit`, with its choices explained. The submission goes
through the API's checks (the same schema, the per-user limit, the same validation); a rejection is shown
next to the field it concerns, with the rule and its fix; success leads to the request's page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from backend.api.deps import Context, Ctx
from backend.api.schemas import SubmissionIn
from backend.domain import ModelType, Precision, Submission, WeightType
from backend.errors import AlreadySubmitted, FieldInvalid, LeaderboardError, SubmissionRejected
from backend.publish.table import TYPE_LABELS
from backend.services.redact import strip_server_paths
from backend.web.session import csrf_matches
from backend.web.view import CSRF_PROBLEM, page, read_form, signed_in

FIELDS = ("model", "revision", "precision", "weight_type", "base_model", "model_type", "use_chat_template")

#: Which field a rejection's rule concerns (the rest concern the model repository itself).
RULE_FIELDS = {
    "revision": "revision",
    "precision": "precision",
    "model-type": "model_type",
    "base-model": "base_model",
    "chat-template": "use_chat_template",
}

PRECISIONS = {
    Precision.BFLOAT16: "bfloat16: the weights as most models are trained and published (the default)",
    Precision.FLOAT16: "float16: for models published in half precision",
    Precision.INT8: "8bit: loaded with bitsandbytes in 8 bits (needs a GPU)",
    Precision.INT4: "4bit: loaded with bitsandbytes in 4 bits (needs a GPU)",
    Precision.GPTQ: "GPTQ: weights already quantized with GPTQ in the repository (needs a GPU)",
}
WEIGHT_TYPES = {
    WeightType.ORIGINAL: "Original: the repository holds the full weights",
    WeightType.DELTA: "Delta: full-size differences to add to a base model (give the base model)",
    WeightType.ADAPTER: "Adapter: a PEFT adapter on top of a base model (give the base model)",
}
CHAT_TEMPLATE = {
    "": "the default: on for chat models, off for the others",
    "on": "on: prompts go through the tokenizer's chat template",
    "off": "off: plain prompts, as for a base model",
}


@dataclass
class Form:
    """The form as filled in, and what is wrong with it, by field ("" for the whole form)."""

    values: dict[str, str]
    problems: dict[str, str]


def _choices() -> dict[str, Any]:
    return {
        "precisions": [(p.value, text) for p, text in PRECISIONS.items()],
        "weight_types": [(w.value, text) for w, text in WEIGHT_TYPES.items()],
        "model_types": [(m.value, TYPE_LABELS[m][1]) for m in ModelType],
        "chat_templates": list(CHAT_TEMPLATE.items()),
    }


def _show(request: Request, ctx: Context, form: Form, status: int = 200) -> HTMLResponse:
    return page(request, ctx, "submit.html", status, form=form, **_choices())


def _submission_in(values: dict[str, str]) -> SubmissionIn:
    chat = values.get("use_chat_template", "")
    fields: dict[str, Any] = {
        "model": values.get("model", "").strip(),
        "revision": values.get("revision", "").strip() or "main",
        "precision": values.get("precision") or Precision.BFLOAT16.value,
        "weight_type": values.get("weight_type") or WeightType.ORIGINAL.value,
        "base_model": values.get("base_model", "").strip() or None,
        "model_type": values.get("model_type") or None,
        "use_chat_template": {"on": True, "off": False}.get(chat),
    }
    if chat not in CHAT_TEMPLATE:
        raise FieldInvalid("use_chat_template", "choose on, off or the default")
    if fields["model_type"] is None:
        raise FieldInvalid(
            "model_type", "rule 'model-type': no model type was chosen. Fix: choose how the model was made"
        )
    return SubmissionIn(**fields)


def _rejection_field(exc: SubmissionRejected) -> str:
    if exc.rule in RULE_FIELDS:
        return RULE_FIELDS[exc.rule]
    return "base_model" if "base model" in exc.problem else "model"


def submit_form(request: Request, ctx: Context, values: dict[str, str]) -> Response:
    """Check and submit the form as the signed-in user: the request's page, or the form with problems."""
    session = signed_in(request, ctx)
    sent_csrf = values.get("csrf")
    values = {k: v[:500] for k, v in values.items() if k in FIELDS}
    if session is None:
        return _show(request, ctx, Form(values, {"": "sign in to submit a model"}), 401)
    if not csrf_matches(session, sent_csrf):
        return _show(request, ctx, Form(values, {"": CSRF_PROBLEM}), 403)
    try:
        body = _submission_in(values)
    except FieldInvalid as exc:
        return _show(request, ctx, Form(values, {exc.field: exc.message}), 422)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            problems.setdefault(field if field in FIELDS else "", f"not valid: {error['msg']}")
        return _show(request, ctx, Form(values, problems), 422)
    try:
        ctx.limiter.hit(session.user, "submission")
        created = ctx.app.submissions.submit(Submission(sender=session.user, **body.model_dump()))
    except AlreadySubmitted as exc:
        where = f" (request {exc.request_id})" if exc.request_id is not None else ""
        return _show(request, ctx, Form(values, {"model": strip_server_paths(exc.message) + where}), 409)
    except SubmissionRejected as exc:
        message = strip_server_paths(exc.message)
        return _show(request, ctx, Form(values, {_rejection_field(exc): message}), exc.http_status)
    except LeaderboardError as exc:
        return _show(request, ctx, Form(values, {"": strip_server_paths(exc.message)}), exc.http_status)
    return RedirectResponse(f"/requests/{created.id}", status_code=303)


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/submit", response_class=HTMLResponse)
    def form(request: Request, ctx: Ctx) -> HTMLResponse:
        return _show(request, ctx, Form({}, {}))

    @router.post("/submit", response_class=HTMLResponse)
    async def submit(request: Request, ctx: Ctx) -> Response:
        values = await read_form(request)
        work: Callable[[], Response] = lambda: submit_form(request, ctx, values)  # noqa: E731
        return await run_in_threadpool(work)

    return router
