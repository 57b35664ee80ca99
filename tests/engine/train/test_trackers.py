"""Experiment trackers on the tiny model: one run reports to TensorBoard, MLflow and W&B at once, and
each tracker's own reader finds what the run's events say; a tracker that cannot start or fails
turns off with one line and the run trains on; the command line's --report-to; and nothing tries
to reach another machine unless the user gave it an address."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from engine.core.telemetry import switch_off_telemetry
from engine.errors import StudioError
from engine.run.config import RunConfig
from engine.run.events import LogLine, RunFinished, StepMetrics, read_events
from engine.run.rundir import RunDir
from engine.train import recipe
from helpers import run_cli, write_messages_dataset
from training_runs import new_run

_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0", ""}
_connections: list = []  # (event, address) reaching beyond this machine, while _watching
_watching = False


def _record_network(event: str, args: tuple) -> None:
    """An audit hook (hooks stay for the process's life: it records only while a test watches)."""
    if not _watching or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    address = args[1] if event == "socket.connect" else args
    host = address[0] if isinstance(address, tuple) and address else None
    if isinstance(host, str) and host not in _LOCAL_HOSTS:  # a path (AF_UNIX) or loopback stays here
        _connections.append((event, address))


sys.addaudithook(_record_network)


@pytest.fixture
def own_environment():
    """The trackers' environment is the training child's; here the run is in the test's process."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _train_in_process(run) -> list:
    """The run as its training child runs it (``recipe.train_owned``, less the lower priority)."""
    switch_off_telemetry()
    finished = recipe.run_and_report(run)
    assert finished.status == "completed", finished.error
    return read_events(RunDir(run.run_dir).events)


def _tracker_lines(events) -> list[str]:
    return [event.message for event in events if isinstance(event, LogLine) and " is off " in event.message]


def test_one_run_reports_to_tensorboard_mlflow_and_wandb_offline_and_contacts_no_one(
        tiny_model_dir, tmp_path, own_environment, monkeypatch):
    global _watching
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # not logged in to W&B, whatever this machine has
    for folder in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # its service's own logs: not in the tester's home
        monkeypatch.setenv(folder, str(tmp_path / folder.lower()))
    run = new_run(tmp_path, tiny_model_dir, max_steps=3, report_to=["tensorboard", "mlflow", "wandb"])
    _watching = True
    try:
        events = _train_in_process(run)
    finally:
        _watching = False
    assert _connections == []  # three trackers, and not one address looked up or connected to
    assert _tracker_lines(events) == []
    losses = {event.step: event.loss for event in events if isinstance(event, StepMetrics)}
    assert sorted(losses) == [1, 2, 3]
    folder = RunDir(run.run_dir)

    # TensorBoard's own reader, on the folder a user points tensorboard --logdir at.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(folder.tensorboard))
    board.Reload()
    scalars = {point.step: point.value for point in board.Scalars("train/loss")}
    assert scalars == pytest.approx(losses, rel=1e-6)

    # MLflow's client, on the run folder's store: the run is named for its folder, with its settings and curve.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=folder.mlruns.as_uri())
    experiment = client.get_experiment_by_name("lora-studio")
    [tracked] = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_name == run.run_dir.name and tracked.info.status == "FINISHED"
    assert (tracked.data.params["learning_rate"], tracked.data.params["max_steps"]) == ("0.01", "3")
    history = {point.step: point.value for point in client.get_metric_history(tracked.info.run_id, "loss")}
    assert history == pytest.approx(losses)

    # W&B offline: its run files in the run folder, for wandb sync to upload later.
    [offline] = folder.wandb.glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")) and (offline / "files").is_dir()
    notes = [event.message for event in events if isinstance(event, LogLine) and event.message.startswith("Reporting")]
    assert any("offline" in note and str(folder.wandb) in note for note in notes)


def test_a_tracker_that_fails_during_the_run_turns_off_once_and_the_run_trains_on(tiny_model_dir, tmp_path,
                                                                                   own_environment):
    run = new_run(tmp_path, tiny_model_dir, max_steps=2, report_to=["tensorboard"])
    RunDir(run.run_dir).tensorboard.write_text("a file where TensorBoard's folder goes")
    events = _train_in_process(run)
    [line] = _tracker_lines(events)
    assert line.startswith("TensorBoard is off from step 0: ")
    assert isinstance(events[-1], RunFinished) and events[-1].adapter


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_report_to_with_an_unreachable_mlflow_server_trains_and_says_so_once(tiny_model_dir, tmp_path, capsys):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    uri = f"http://127.0.0.1:{_closed_port()}"
    code, out, err = run_cli(["train", "--model", tiny_model_dir, "--dataset", dataset, "--max-steps", "2",
                              "--batch", "4", "--max-length", "64", "--log-every", "1", "--rank", "4",
                              "--report-to", "tensorboard,mlflow", "--mlflow-uri", uri, "--json"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["status"] == "completed"
    off = [line["message"] for line in lines if line.get("event") == "LogLine" and " is off " in line["message"]]
    assert len(off) == 1 and off[0].startswith(f"MLflow is off for this run: the tracking server {uri} cannot be "
                                               "reached")
    run_dir = RunDir(lines[-1]["run_dir"])
    assert list(run_dir.tensorboard.glob("events.out.tfevents.*")) and not run_dir.mlruns.exists()
    assert RunConfig.load(run_dir.config).report_to == ["tensorboard", "mlflow"]


def _one_line_error(code: int, out: str, err: str, fragment: str) -> None:
    assert code != 0 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


def test_an_unknown_tracker_or_a_uri_without_mlflow_is_one_line(tiny_model_dir, tmp_path, capsys):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    base = ["train", "--model", tiny_model_dir, "--dataset", dataset]
    _one_line_error(*run_cli([*base, "--report-to", "tensorboard,comet"], capsys), "unknown tracker 'comet'")
    _one_line_error(*run_cli([*base, "--report-to", "wandb", "--mlflow-uri", "http://localhost:5000"], capsys),
                    "add mlflow")
    with pytest.raises(StudioError, match="names no server"):
        RunConfig.from_dict({"model": "m", "dataset": "d", "report_to": ["mlflow"], "mlflow_uri": "https://"})
