"""What a failure inside chat means to the person chatting: library errors as messages to act on."""

from __future__ import annotations

from engine.errors import StudioError, first_line


def explain_adapter_failure(ref: str, model: str, exc: Exception) -> str:
    text = first_line(exc)
    if "size mismatch" in str(exc):
        return f"adapter {ref!r} was made for a different base model: its weight shapes do not match {model}"
    if "not found in the base model" in text or "Target module" in text:
        return f"adapter {ref!r} was made for a different base model: {model} has no modules it targets"
    return f"adapter {ref!r} could not be loaded: {text}"


def readable_generation_error(exc: BaseException) -> BaseException:
    if "out of memory" in str(exc).lower():
        return StudioError("out of memory while generating: lower the max new tokens or shorten the conversation")
    return exc

