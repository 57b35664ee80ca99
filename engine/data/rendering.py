"""Chat-template rendering: the template to train with (the model's own, or ChatML for a
base model without one), a conversation as the model sees it, and the character spans of
the assistant's replies, which are all that training learns (the rest is masked out).

Nothing here imports torch: the tokenizer object is handed in by the caller.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from engine.data.templates import render_template
from engine.errors import StudioError, first_line

# For base models that ship without a chat template. ChatML, with the model's own BOS in
# front and its EOS after each reply, so a trained adapter learns to stop. Training saves
# it with the adapter, so chat renders exactly what training saw.
CHATML_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' and eos_token and eos_token != '<|im_end|>' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_template_for(tokenizer: Any) -> tuple[str, bool]:
    """The template to train with: the model's own, or ChatML when it has none (True)."""
    own = getattr(tokenizer, "chat_template", None)
    return (own, False) if isinstance(own, str) and own else (CHATML_TEMPLATE, True)


def render_conversation(
    messages: list[dict],
    tokenizer,
    *,
    add_generation_prompt: bool = False,
    chat_template: Optional[str] = None,
    template_of: Optional[str] = None,
) -> str:
    """The conversation as the model sees it, through its chat template.

    Training and chat both render through here, so they cannot disagree on the template.
    The template is untrusted code, rendered within a time and size bound
    (``engine.data.templates``); ``template_of`` names whose it is in a refusal (by default
    the tokenizer's model). The template sees what transformers' ``apply_chat_template``
    gives it: the messages, ``add_generation_prompt`` and the special tokens.
    """
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise StudioError("the model's tokenizer has no chat template; choose one before training on chat data")
    try:
        template = tokenizer.get_chat_template(chat_template)
    except ValueError as exc:  # several named templates and none of them the default
        raise StudioError(f"the chat template of {template_owner(tokenizer)} cannot be chosen: {first_line(exc)}") from None
    if not messages:
        raise StudioError("there is no message to render through the chat template")
    context = {
        **tokenizer.special_tokens_map,
        # Copies without the None values, as transformers passes them.
        "messages": [{key: value for key, value in message.items() if value is not None} for message in messages],
        "tools": None,
        "documents": None,
        "add_generation_prompt": add_generation_prompt,
    }
    return render_template(template, template_of or template_owner(tokenizer), context)


def template_owner(tokenizer: Any) -> str:
    """The model a tokenizer (and so its own chat template) comes from, for messages."""
    source = str(getattr(tokenizer, "name_or_path", "") or "")
    return f"model {os.path.basename(source.rstrip('/'))!r}" if source else "the model"


def assistant_spans(
    messages: list[dict], tokenizer, chat_template: Optional[str] = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the model must learn to write.

    A reply's span runs from the end of the generation prompt that precedes it to the
    end of its own turn, so it covers the reply and the template's end-of-turn marker
    (the model learns to stop) and nothing the user or the template wrote.
    """
    full = render_conversation(messages, tokenizer, chat_template=chat_template)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_conversation(
            messages[:index], tokenizer, add_generation_prompt=True, chat_template=chat_template
        )
        # Up to the last reply is the whole conversation: no need to render it twice.
        last = index == len(messages) - 1
        upto = full if last else render_conversation(messages[: index + 1], tokenizer, chat_template=chat_template)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise StudioError(
                "the chat template renders earlier turns differently once a reply follows, "
                "so the prompt cannot be masked out of the loss; use a template whose "
                "rendering of a conversation starts with the rendering of its first turns"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans
