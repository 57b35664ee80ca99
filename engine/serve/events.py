"""What the server tells whoever watches it (the Serve page's request log, the CLI's --json lines):
one event per answered request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional


@dataclass
class RequestLogged:
    """One request, once it was answered (or refused)."""

    at: float  # when it arrived, as a Unix time
    client: str  # host:port of the caller
    endpoint: str  # "/v1/chat/completions"
    model: str  # the model field as the client sent it ("" when it sent none)
    status: int  # the HTTP status answered
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # from arrival to the last byte of the answer
    error: Optional[str] = None  # the message of a refusal or failure

    def to_dict(self) -> dict[str, Any]:
        return {"event": "request", **asdict(self)}
