"""The evaluation tests' shared chat session on the tiny model, one per test module."""

from __future__ import annotations

import pytest

from engine.chat.session import ChatSession


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    """A loaded session on the tiny model (its threads: the worker's, as the suite sets them)."""
    chat = ChatSession(str(tiny_model_dir), device="cpu")
    chat.load()
    yield chat
    chat.close()
