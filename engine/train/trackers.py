"""The experiment trackers a run reports to beside the studio's own events: TensorBoard, MLflow and
Weights & Biases, through the Trainer's ``report_to``.

This module owns, for each tracker:

- where it writes: TensorBoard's event files in ``RUN_DIR/tensorboard``; MLflow's local store in
  ``RUN_DIR/mlruns``, or the tracking URI the user gave; W&B's run files in ``RUN_DIR/wandb``,
  offline unless the user is logged in (``WANDB_API_KEY``, or a netrc entry for the W&B host);
- the environment variables it reads, set in the training child before the Trainer makes the
  tracker's callback (transformers' integrations read them there);
- what may leave the machine: nothing, unless the user gave a server's address (an http(s) MLflow
  URI) or is logged in to W&B. The libraries' own telemetry and error reports are off in every run.

A tracker that cannot start (its package missing, its server unreachable) or that fails during the
run is turned off with one log line, and the run trains on: a tracker is a copy of the curves the
run's own events already hold, never a reason to lose the run.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from transformers import TrainerCallback

from engine.core.choices import TRACKER_LABELS
from engine.run.config import RunConfig
from engine.run.rundir import RunDir

# How long the start of a run waits to learn whether a tracking server answers.
REACH_TIMEOUT_S = 3.0
# A server that stops answering mid-run holds a step for at most about this long (MLflow's defaults
# retry 7 times over minutes); the user's own settings of these win.
_MLFLOW_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_PROJECT = "lora-studio"  # the MLflow experiment and the W&B project a run goes into, unless the user named one
_WANDB_HOST = "https://api.wandb.ai"
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
_INSTALL = "pip install 'lora-studio[trackers]'"


@dataclass
class Trackers:
    """The trackers a run reports to once checked: their names (the Trainer's ``report_to``), the
    environment they read, and what each will do, for the run's log."""

    names: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def report_to(self) -> Any:
        return list(self.names) or "none"


def prepare(config: RunConfig, run_dir: Path, say: Callable[[str], None]) -> Trackers:
    """Check each tracker the run asked for and work out its environment; one that cannot start is
    left out, and ``say`` tells why, once."""
    trackers = Trackers()
    for name in config.report_to:
        setup = _SETUPS[name](config, RunDir(run_dir)) if _installed(name, say) else None
        if setup is None:
            continue
        problem, environment, note = setup
        if problem:
            say(f"{TRACKER_LABELS[name]} is off for this run: {problem}")
            continue
        trackers.names.append(name)
        trackers.environment.update(environment)
        trackers.notes.append(note)
    return trackers


def apply(trackers: Trackers) -> None:
    """Set the trackers' environment in this process (the training child's), before the Trainer is built."""
    os.environ.update(trackers.environment)


def _installed(name: str, say: Callable[[str], None]) -> bool:
    """Whether the tracker's package imports (imported now: its callback imports it anyway)."""
    try:
        importlib.import_module(_PACKAGES[name])
    except Exception as exc:  # missing, or installed but broken: the callback could not be made
        reason = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"does not import ({_first_line(exc)})"
        say(f"{TRACKER_LABELS[name]} is off for this run: the {_PACKAGES[name]} package {reason}; {_INSTALL}")
        return False
    return True


Setup = tuple[Optional[str], dict[str, str], str]  # why it cannot start (or None), its environment, what it does


def _tensorboard(config: RunConfig, run_dir: RunDir) -> Setup:
    folder = run_dir.tensorboard
    return None, {"TENSORBOARD_LOGGING_DIR": str(folder)}, f"TensorBoard: tensorboard --logdir {folder}"


def _mlflow(config: RunConfig, run_dir: RunDir) -> Setup:
    environment = {"MLFLOW_EXPERIMENT_NAME": os.environ.get("MLFLOW_EXPERIMENT_NAME", _PROJECT)}
    uri = config.mlflow_uri or run_dir.mlruns.as_uri()
    address = urlsplit(uri)
    if address.scheme in ("http", "https"):
        problem = unreachable_url(uri)
        if problem:
            return f"the tracking server {uri} cannot be reached ({problem})", {}, ""
        environment.update({key: os.environ.get(key, value) for key, value in _MLFLOW_PATIENCE.items()})
        note = f"MLflow: sending to {uri}"
    else:
        note = f"MLflow: a local store, MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}"
    if address.scheme in ("file", ""):
        # MLflow 3 keeps its file store for those who ask for it (a database needs the full mlflow package).
        environment["MLFLOW_ALLOW_FILE_STORE"] = "true"
    environment["MLFLOW_TRACKING_URI"] = uri
    return None, environment, note


def _wandb(config: RunConfig, run_dir: RunDir) -> Setup:
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode == "disabled":
        return "WANDB_MODE is disabled in this environment", {}, ""
    environment = {"WANDB_DIR": str(run_dir.path), "WANDB_PROJECT": os.environ.get("WANDB_PROJECT", _PROJECT)}
    host = os.environ.get("WANDB_BASE_URL", _WANDB_HOST)
    online = mode not in ("offline", "dryrun") and wandb_logged_in(host)
    if online:
        problem = unreachable_url(host)
        if problem:
            return None, dict(environment, WANDB_MODE="offline"), (
                f"Weights & Biases: {host} cannot be reached ({problem}); writing offline to {run_dir.wandb}, "
                "wandb sync uploads it later")
        return None, dict(environment, WANDB_MODE="online"), f"Weights & Biases: sending to {host}"
    environment["WANDB_MODE"] = "offline"
    return None, environment, f"Weights & Biases: offline, in {run_dir.wandb} (wandb sync uploads it)"


_SETUPS: dict[str, Callable[[RunConfig, RunDir], Setup]] = {
    "tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def wandb_logged_in(host: str = _WANDB_HOST) -> bool:
    """Whether W&B would find credentials for ``host`` as ``wandb.init`` looks for them: an API key
    or an identity token file in the environment, else an entry in the netrc file (what
    ``wandb login`` writes). A key of the wrong shape counts as no login."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return read_netrc_auth(host=host) is not None
    except Exception:  # wandb's AuthenticationError: an entry W&B itself would refuse
        return False


def unreachable_url(url: str) -> Optional[str]:
    """``unreachable`` for a URL's server: its port, else its scheme's (443 for https, else 80)."""
    address = urlsplit(url)
    return unreachable(address.hostname or "", address.port or (443 if address.scheme == "https" else 80))


def unreachable(host: str, port: int) -> Optional[str]:
    """Why nothing answers at ``host:port`` within ``REACH_TIMEOUT_S``, or None when something does."""
    if not host:
        return "no host name"
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            return None
    except socket.timeout:
        return f"no answer in {REACH_TIMEOUT_S:g} s"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


# Keeping a failing tracker from failing the run ------------------------------------------------------

def guard(trainer: Any, trackers: Trackers, say: Callable[[str], None]) -> None:
    """Wrap each tracker's callback in the Trainer so that an exception from it turns that tracker
    off, with one line through ``say``, instead of ending the run."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    handler = trainer.callback_handler
    for index, callback in enumerate(handler.callbacks):
        name = next((name for name in trackers.names if type(callback) is INTEGRATION_TO_CALLBACK[name]), None)
        if name is not None:
            handler.callbacks[index] = GuardedTracker(name, callback, say)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _guarded_event(event: str) -> Callable[..., Any]:
    def call(self: "GuardedTracker", args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.off:
            return None
        try:
            result = getattr(self.inner, event)(args, state, control, **kwargs)
            if event == "on_train_end":
                self._finish()
            return result
        except Exception as exc:
            self._turn_off(exc, event, args, state, control)
            return None

    call.__name__ = event
    return call


class GuardedTracker(TrainerCallback):
    """A tracker's callback that can fail without failing the run. After the training ends it is
    closed (its run finished, its files complete) and hears nothing more."""

    def __init__(self, name: str, inner: Any, say: Callable[[str], None]) -> None:
        self.name = name
        self.inner = inner
        self._say = say
        self.off = False

    def _turn_off(self, exc: Exception, event: str, args: Any, state: Any, control: Any) -> None:
        self.off = True
        self._say(f"{TRACKER_LABELS[self.name]} is off from step {state.global_step}: {_first_line(exc)}")
        if event != "on_train_end":
            try:  # close what it opened (a writer, a run) as well as it can: its failure is already told
                self.inner.on_train_end(args, state, control)
                self._finish()
            except Exception:
                pass

    def _finish(self) -> None:
        self.off = True
        # W&B's run stays open until the process ends: finish it now, so its files are complete when
        # the run's adapter is saved (and a later run in the same process starts its own).
        wandb = getattr(self.inner, "_wandb", None) if self.name == "wandb" else None
        if wandb is not None and wandb.run is not None:
            wandb.finish()


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    setattr(GuardedTracker, _event, _guarded_event(_event))
