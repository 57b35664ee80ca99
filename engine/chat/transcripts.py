"""Saving a conversation and reading it back: ``ChatTranscript`` as JSON or Markdown.

Both formats carry the messages, the model and adapter labels and the generation
settings; Markdown stays readable as it is and loads again through its role headings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.chat.sampling import SETTINGS
from engine.core.atomic import write_text
from engine.core.fields import whole_field
from engine.errors import StudioError

TRANSCRIPT_FORMAT = "lora-studio-chat"
TRANSCRIPT_VERSION = 1
ROLES = ("system", "user", "assistant")


@dataclass
class ChatTranscript:
    """A conversation as saved: the messages (a system prompt first, if any), with what
    produced them. ``model`` and ``adapter`` are labels for people, not references."""

    messages: list[dict[str, str]]
    model: Optional[str] = None
    adapter: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for message in self.messages:
            if not (isinstance(message, dict) and message.get("role") in ROLES
                    and isinstance(message.get("content"), str)):
                raise StudioError(f"every message needs a role ({', '.join(ROLES)}) and a text content")
        unknown = sorted(set(self.settings) - set(SETTINGS))
        if unknown:
            raise StudioError(f"unknown generation setting(s): {', '.join(unknown)}")
        for name, value in self.settings.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise StudioError(f"generation setting {name} must be a number, got {value!r}")
        self.messages = [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def to_json(self) -> str:
        data = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "model": self.model,
                "adapter": self.adapter, "settings": self.settings, "messages": self.messages}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        """Readable as it is; the heading lines and the metadata comment make it loadable again."""
        title = f"# Chat with {self.model or 'a model'}" + (f" · adapter {self.adapter}" if self.adapter else "")
        meta = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "model": self.model,
                "adapter": self.adapter, "settings": self.settings}
        parts = [title, "", f"<!-- {json.dumps(meta, ensure_ascii=False)} -->", ""]
        for message in self.messages:
            parts += [f"## {message['role'].capitalize()}", "", _escape_headings(message["content"]), ""]
        return "\n".join(parts) + "\n"


_HEADING = re.compile(r"^(\\*)## (System|User|Assistant)\s*$")


def _escape_headings(text: str) -> str:
    # A line of the message that reads like a role heading gets one more backslash, so
    # that reading the file back splits the messages where they were split.
    return "\n".join(f"\\{line}" if _HEADING.match(line) else line for line in text.split("\n"))


def save_transcript(path: str | Path, transcript: ChatTranscript) -> Path:
    """Write ``transcript`` as Markdown for a ``.md`` file, else JSON; atomically."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise StudioError(f"cannot save the chat: folder {path.parent} does not exist")
    markdown = path.suffix.lower() in (".md", ".markdown")
    try:
        write_text(path, transcript.to_markdown() if markdown else transcript.to_json())
    except OSError as exc:
        raise StudioError(f"cannot save the chat to {path}: {exc.strerror or exc}") from None
    return path


def load_transcript(path: str | Path) -> ChatTranscript:
    """Read a transcript saved by ``save_transcript`` (JSON or Markdown)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudioError(f"chat file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudioError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() in (".md", ".markdown"):
        return _parse_markdown(text, path)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StudioError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
        raise StudioError(f"{path.name} is not a LoRA Studio chat (no \"format\": \"{TRANSCRIPT_FORMAT}\")")
    return _transcript_from(data, data.get("messages"), path)


def _transcript_from(meta: dict[str, Any], messages: Any, path: Path) -> ChatTranscript:
    if not isinstance(messages, list):
        raise StudioError(f"{path.name} has no list of messages")
    version = whole_field({"version": TRANSCRIPT_VERSION, **meta}, "version")
    if version is None:
        raise StudioError(f"{path.name}: its chat format version {meta.get('version')!r} is not a whole number")
    if version > TRANSCRIPT_VERSION:
        raise StudioError(f"{path.name} was written by a newer LoRA Studio (chat format {version})")
    settings = meta.get("settings") or {}
    if not isinstance(settings, dict):
        raise StudioError(f"{path.name}: settings must be an object")
    labels = [meta.get(key) if isinstance(meta.get(key), str) else None for key in ("model", "adapter")]
    try:
        return ChatTranscript(messages=messages, model=labels[0], adapter=labels[1], settings=settings)
    except StudioError as exc:
        raise StudioError(f"{path.name}: {exc}") from None


def _parse_markdown(text: str, path: Path) -> ChatTranscript:
    lines = text.split("\n")
    headings = [(index, match) for index, line in enumerate(lines) if (match := _HEADING.match(line))
                and not match.group(1)]
    if not headings:
        raise StudioError(f"{path.name} has no '## User' or '## Assistant' headings: not a LoRA Studio chat")
    meta: dict[str, Any] = {}
    comment = re.search(r"<!--\s*(\{.*?\})\s*-->", "\n".join(lines[:headings[0][0]]), re.DOTALL)
    if comment:
        try:
            meta = json.loads(comment.group(1))
        except (ValueError, RecursionError):
            raise StudioError(f"{path.name}: the metadata comment is not valid JSON") from None
    ends = [index for index, _match in headings[1:]] + [len(lines) - 1 if lines[-1] == "" else len(lines)]
    messages = []
    for (start, match), end in zip(headings, ends):
        body = lines[start + 1:end]
        if body and body[0] == "":
            body = body[1:]  # the blank line under the heading
        if body and body[-1] == "":
            body = body[:-1]  # the blank line before the next heading
        content = "\n".join(_unescape_heading(line) for line in body)
        messages.append({"role": match.group(2).lower(), "content": content})
    return _transcript_from(meta if isinstance(meta, dict) else {}, messages, path)


def _unescape_heading(line: str) -> str:
    match = _HEADING.match(line)
    return line[1:] if match and match.group(1) else line
