"""The Trainer callback that turns training into events and obeys pause / stop.

Following transformers' ``TrainerCallback`` contract, it changes nothing but the
control flags: stopping is ``control.should_training_stop``. It also asks for a
checkpoint at the last step and at a stop that keeps the work, so every run that
ends well can be resumed or trained further from where it ended.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

from transformers import TrainerCallback

from engine.run.control import ControlReader
from engine.run.events import CheckpointSaved, EvalMetrics, Event, Paused, Resumed, StepMetrics
from engine.hardware import memory_in_use
from engine.train import distributed

PAUSE_POLL_S = 0.2
# TRL's preference trainers log their implicit rewards under these names (DPO, ORPO, SimPO and KTO
# alike; KTO has no accuracy): StepMetrics' fields -> the log's keys.
REWARD_LOGS = {"rewards_chosen": "rewards/chosen", "rewards_rejected": "rewards/rejected",
               "reward_margin": "rewards/margins", "reward_accuracy": "rewards/accuracies"}


class EventCallback(TrainerCallback):
    def __init__(self, emit: Callable[[Event], None], control: ControlReader, device: str,
                 on_train_begin: Callable[[int], None]) -> None:
        self._emit = emit
        self._control = control
        self._device = device
        self._on_begin = on_train_begin
        self._started = time.monotonic()
        self._last_log_time = self._started
        self._last_tokens = 0
        self.stop_requested = False
        self.save_on_stop = True
        self.loss_history: list[tuple[int, float]] = []
        self.nonfinite_loss: Optional[float] = None
        self.step = 0  # the last step that finished, for the out-of-memory report

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_tokens = state.num_input_tokens_seen or 0
        self.step = state.global_step
        self._on_begin(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        command = self._command()
        if command.get("command") == "pause":
            command = self._wait_while_paused(state.global_step)
        if command.get("command") == "stop":
            self.stop_requested = True
            self.save_on_stop = bool(command.get("save", True))
            control.should_training_stop = True
            # Keeping the work keeps a checkpoint too, so the run can be resumed; discarding keeps nothing.
            control.should_save = self.save_on_stop
        elif state.global_step >= state.max_steps:
            control.should_save = True  # the end state, for "train more"

    def _command(self) -> dict:
        return distributed.agree_on(self._control.poll())

    def _wait_while_paused(self, step: int) -> dict:
        self._emit(Paused(step=step))
        paused_at = time.monotonic()
        while (command := self._command()).get("command") == "pause":
            time.sleep(PAUSE_POLL_S)
        # Paused time is not training time: keep tokens/s and elapsed honest.
        paused_for = time.monotonic() - paused_at
        self._started += paused_for
        self._last_log_time += paused_for
        if command.get("command") != "stop":
            self._emit(Resumed(step=step))
        return command

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            held_out = _rewards({key.removeprefix("eval_"): value for key, value in logs.items()})
            self._emit(EvalMetrics(step=state.global_step, eval_loss=float(logs["eval_loss"]),
                                   reward_accuracy=held_out.get("reward_accuracy")))
        if "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.nonfinite_loss = loss
            control.should_training_stop = True
            control.should_save = False
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        interval = now - self._last_log_time
        tokens_per_second = (tokens - self._last_tokens) / interval if interval > 0 and tokens else None
        self._last_log_time, self._last_tokens = now, tokens
        allocated, reserved = memory_in_use(self._device)
        grad_norm = logs.get("grad_norm")
        self.loss_history.append((state.global_step, loss))
        self._emit(StepMetrics(
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=float(state.epoch or 0.0),
            loss=loss,
            learning_rate=float(logs.get("learning_rate", 0.0)),
            # An exploding gradient's inf is "unknown" here: readers skip events whose numbers are not finite.
            grad_norm=float(grad_norm) if grad_norm is not None and math.isfinite(float(grad_norm)) else None,
            tokens_per_second=tokens_per_second,
            memory_allocated=allocated,
            memory_reserved=reserved,
            elapsed_s=now - self._started,
            **_rewards(logs),
        ))

    def on_save(self, args, state, control, **kwargs):
        path = f"{args.output_dir}/checkpoint-{state.global_step}"
        self._emit(CheckpointSaved(step=state.global_step, path=path))


def _rewards(logs: dict) -> dict[str, Optional[float]]:
    """The preference rewards in this log, where finite (an SFT run logs none)."""
    found = {field: logs.get(key) for field, key in REWARD_LOGS.items()}
    return {field: float(value) for field, value in found.items()
            if value is not None and math.isfinite(float(value))}
