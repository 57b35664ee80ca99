"""The OpenAI API as this server speaks it: the request bodies it accepts (pydantic models, so
FastAPI's own library validates the types), the refusals as OpenAI's error JSON, and the
response and stream-chunk objects its clients parse.

Fields the engine cannot honour are refused by name rather than ignored: a client asking for
``n=3`` or ``logprobs`` and silently getting something else would be misled. Fields that change
nothing here (``user``, ``metadata``...) are ignored, as OpenAI's own server ignores unknown ones.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError

# OpenAI's defaults where a request leaves a field out; max tokens as the Chat page's.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_CHAT_MAX_TOKENS = 512
DEFAULT_COMPLETION_MAX_TOKENS = 16  # the legacy completions endpoint's documented default
MAX_STOP_STRINGS = 4


class ApiError(Exception):
    """A request refused or failed, answered as OpenAI's ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None  # an extension (vLLM's too): 0 or -1 is off
    repetition_penalty: Optional[float] = None  # an extension, as on the Chat page
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    stop: Optional[Union[str, list[str]]] = None
    n: Optional[int] = None
    logprobs: Optional[Union[bool, int]] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None  # token id (as text, JSON keys are) -> -100..100

    def token_biases(self, vocabulary: int) -> dict[int, float]:
        biases = {}
        for key, bias in (self.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= vocabulary:
                raise ApiError(400, f"logit_bias: {key!r} is not a token id of this model (0 to {vocabulary - 1})",
                               param="logit_bias")
            biases[int(key)] = bias
        return biases

    def refuse_unsupported(self) -> None:
        if self.n not in (None, 1):
            raise ApiError(400, "n must be 1: this server answers each request once", param="n")
        if self.logprobs:
            raise ApiError(400, "logprobs are not supported by this server", param="logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(400, f"{name} is not supported: use repetition_penalty", param=name)

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", param="stop")
        if any(not stop for stop in stops):
            raise ApiError(400, "a stop string must not be empty", param="stop")
        return stops

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.get("include_usage"))


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: Optional[str] = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Optional[Union[str, list[_TextPart]]] = None

    def as_chat_message(self) -> dict[str, str]:
        """The message as the engine's chat takes it: a role and one text ("developer" is OpenAI's
        newer name for "system")."""
        if isinstance(self.content, list):
            if any(part.type != "text" or part.text is None for part in self.content):
                raise ApiError(400, "only text content is supported", param="messages")
            text = "".join(part.text or "" for part in self.content)
        else:
            text = self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Request):
    messages: list[Message]
    max_completion_tokens: Optional[int] = None  # OpenAI's newer name for max_tokens
    tools: Optional[list[Any]] = None
    response_format: Optional[dict[str, Any]] = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.tools:
            raise ApiError(400, "tools are not supported by this server", param="tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ApiError(400, "only the text response format is supported", param="response_format")
        if not self.messages:
            raise ApiError(400, "messages must not be empty", param="messages")

    def wanted_tokens(self) -> int:
        chosen = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return DEFAULT_CHAT_MAX_TOKENS if chosen is None else chosen


class CompletionRequest(_Request):
    prompt: Union[str, list[str]]
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise ApiError(400, "echo is not supported by this server", param="echo")
        if self.suffix:
            raise ApiError(400, "suffix is not supported by this server", param="suffix")
        if self.best_of not in (None, 1):
            raise ApiError(400, "best_of must be 1", param="best_of")

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ApiError(400, "send one prompt per request", param="prompt")
        return self.prompt[0]

    def wanted_tokens(self) -> int:
        return DEFAULT_COMPLETION_MAX_TOKENS if self.max_tokens is None else self.max_tokens


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` as ``model``, or an ``ApiError`` naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = "is required" if error["type"] == "missing" else error["msg"].lower()
        raise ApiError(400, f"{where}: {message}", param=str(error["loc"][0])) from None


class Answer:
    """The identity and shape of one answer: its id, time and model name, and the objects and
    chunks OpenAI's clients parse, for the chat or the completions endpoint."""

    def __init__(self, model: str, *, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _head(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def whole(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head(self.object), "choices": [choice], "usage": usage}

    def chunk(self, text: Optional[str] = None, *, finish_reason: Optional[str] = None,
              first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        name = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(name), "choices": [], "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
