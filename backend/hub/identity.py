"""Who a Hugging Face token belongs to, asked of the Hub (`whoami`): the HTTP API's production login.

Behind a small interface so an air-gapped deployment can turn it off (API tokens only) and tests can point
it at a local Hub endpoint.
"""

from __future__ import annotations

from typing import Protocol

from backend.errors import IdentityUnavailable, Unauthorized


class IdentityProvider(Protocol):
    def whoami(self, token: str) -> str:
        """The user name the token belongs to; Unauthorized when the token is not valid, IdentityUnavailable
        when the answer cannot be had now."""


class HubIdentity:
    """huggingface_hub's whoami against HF_ENDPOINT (or ``endpoint``)."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint

    def whoami(self, token: str) -> str:
        import httpx2
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            info = HfApi(endpoint=self.endpoint).whoami(token=token)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise Unauthorized("the Hub does not recognise this Hugging Face token") from exc
            raise IdentityUnavailable(f"the Hub could not verify the token (HTTP {status})") from exc
        except (httpx2.TransportError, OSError) as exc:
            raise IdentityUnavailable(
                f"the Hub cannot be reached to verify the token: {type(exc).__name__}"
            ) from exc
        name = info.get("name") if isinstance(info, dict) else None
        if not isinstance(name, str) or not name:
            raise IdentityUnavailable("the Hub's whoami answer has no user name")
        return name
