"""What a user copies to call the server from their own tools: a curl command and a Python
script with the official ``openai`` client, for one served model."""

from __future__ import annotations

import json
import shlex
from typing import Optional

_QUESTION = "Hello! Who are you?"


def curl_snippet(url: str, model: str, api_key: Optional[str] = None) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": _QUESTION}]})
    lines = [f"curl {shlex.quote(url + '/chat/completions')}", "-H 'Content-Type: application/json'"]
    if api_key:
        lines.append(f"-H {shlex.quote('Authorization: Bearer ' + api_key)}")
    lines.append(f"-d {shlex.quote(body)}")
    return " \\\n  ".join(lines)


def python_snippet(url: str, model: str, api_key: Optional[str] = None) -> str:
    # The client insists on a key; a server started without one takes any.
    key = api_key or "not-needed"
    return "\n".join([
        "from openai import OpenAI",
        "",
        f"client = OpenAI(base_url={url!r}, api_key={key!r})",
        "reply = client.chat.completions.create(",
        f"    model={model!r},",
        f"    messages=[{{'role': 'user', 'content': {_QUESTION!r}}}],",
        ")",
        "print(reply.choices[0].message.content)",
    ])
