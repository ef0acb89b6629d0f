"""What every page shares: the templates, the security headers, who is signed in, and reading a form.

Jinja2 escapes every value (autoescape on): a model name or a failure reason is text, never markup.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from backend.api.deps import Context
from backend.web.session import Session, Sessions

#: Security headers of every page: no script, style or image from anywhere but this server, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
CSRF_PROBLEM = "this form expired or came from another site: reload the page and try again"
MAX_FORM_BYTES = 16384
MAX_FORM_FIELDS = 30

templates = Environment(
    loader=PackageLoader("backend.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def where_running(job_id: str | None) -> str:
    """Where a run is, for people: a local process (the local executor's job ids) or a Slurm job."""
    if not job_id:
        return "local"
    if job_id.startswith("local-"):
        return f"local, process {job_id.rsplit('-', 1)[-1]}"
    return f"Slurm job {job_id}"


templates.globals["where_running"] = where_running


def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(
        templates.get_template(name).render(**values), status_code=status, headers=PAGE_HEADERS
    )


def page(request: Request, ctx: Context, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Template ``name`` with the leaderboard's title and who is signed in (unless ``values`` say)."""
    if "session" not in values:
        values["session"] = signed_in(request, ctx)
    return render(name, status, title=ctx.leaderboard.config.title, **values)


def problem(request: Request, ctx: Context, status: int, message: str, back: str) -> HTMLResponse:
    """The error page: what is wrong (a message for people, never a server path) and where to go back."""
    return page(request, ctx, "error.html", status, problem=message, back=back)


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


def signed_in(request: Request, ctx: Context) -> Session | None:
    """The signed-in user, while the API token of the sign-in is live (revoking it signs them out)."""
    session = sessions(request).read(request)
    if session is None:
        return None
    if session.via == "api-token" and ctx.auth.tokens.find_hash(session.token_hash) is None:
        return None
    return session


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form body (the pages' forms), each field's first value; too big or not a form: empty."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES or not request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # more fields than any form of ours has
        return {}
    return {k: v[0] for k, v in fields.items()}
