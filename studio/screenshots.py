"""Screenshots of the real app for the README, so the pictures never go stale.

    python -m studio.screenshots [OUT_DIR]            (default: docs/; about ten minutes on two cores)
    python -m studio.screenshots --pages [OUT_DIR]    (a minute: the pages as they open, no training)
    python -m studio.screenshots --size 1024x680 OUT_DIR   (another window size; default 1280x800)

Plays the first-run demo through the real widgets, offscreen, in a scratch
LORA_STUDIO_HOME: starts a run of the starter model on the pirate sample from
the Train page and grabs the page once the loss curve has some points; lets the
run finish and grabs the Adapters page; then loads the starter on the Chat page,
asks one question without and one with the new adapter, and grabs the replies; then
evaluates the base and the new adapter on the first rows of the pirate sample on the
Evaluate page and grabs the scoreboard and the answers side by side (rows the run trained on:
the tour's run has no validation split, so that picture shows the page, not a fair score; the
README's figures are an evaluation on a run's held-out rows); then serves the starter with the new
adapter from the Serve page, asks the question once through HTTP naming the adapter, and grabs the
page with the request in its log. Last it grabs
Home with the run in its history, the Models page with the starter prepared, and
the Data page measuring the pirate sample in the starter's tokens.

``--pages`` grabs Home, Models and Data in the same way on a fresh start, without
training or chatting: Home then has no runs to list.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from engine.core.choices import RunStatus

MID_RUN_STEPS = 12
DEMO_STEPS = 60
QUESTION = "What is the capital of France?"
EVAL_ROWS, EVAL_TOKENS = 16, 48  # the evaluation's examples and answer length: a minute on two cores
TIMEOUT_MS = 30 * 60 * 1000
SIZE = (1280, 800)


class Camera:
    def __init__(self, window: Any, out: Path) -> None:
        self.window, self.out = window, out
        self.written: set[str] = set()

    def grab(self, name: str) -> None:
        from PySide6.QtWidgets import QApplication

        QApplication.processEvents()  # lay out what the last signal changed (a plot's axes appear)
        self.window.grab().save(str(self.out / name))
        self.written.add(name)
        print(f"wrote {self.out / name}", flush=True)


class PagesTour:
    """Home, Models and Data, each grabbed once what it shows has arrived."""

    def __init__(self, window: Any, camera: Camera, done: Callable[[], None]) -> None:
        self.window, self.camera, self.done = window, camera, done

    def start(self) -> None:
        # Home is grabbed once both its lists have arrived: the devices (found once) and the runs
        # (read again, on a worker thread, each time the page is shown).
        home = self.window.home_page
        self._waiting = {"runs", "hardware"}
        if home.hardware_status.text() not in ("", "Looking for devices…"):
            self._waiting.discard("hardware")
        home.hardwareLoaded.connect(lambda: self._arrived("hardware"))
        home.runsLoaded.connect(lambda: self._arrived("runs"))
        self.window.show_page("Home")

    def _arrived(self, what: str) -> None:
        from PySide6.QtCore import QTimer

        if what in self._waiting:
            self._waiting.discard(what)
            if not self._waiting:
                # Out of the signal: it may come from inside show_page.
                QTimer.singleShot(0, self._home_ready)

    def _home_ready(self) -> None:
        home = self.window.home_page
        if home.runs_model.rowCount():
            home.runs_view.selectRow(0)
        self.camera.grab("home-page.png")
        self.window.show_page("Models")
        self.camera.grab("models-page.png")
        data = self.window.data_page
        self.window.show_page("Data")  # on the Train page's dataset: the pirate sample
        data.inspectionFinished.connect(self._data_ready)
        data.model_picker.set_ref("starter")
        data.tokens_check.setChecked(True)  # measures every row in the starter's tokens

    def _data_ready(self) -> None:
        # Only the latest inspection (the one counting tokens) says it finished.
        data = self.window.data_page
        data.inspectionFinished.disconnect(self._data_ready)
        data.table.selectRow(1)
        self.camera.grab("data-page.png")
        self.done()


class DemoTour:
    """Each step waits for the signal that ends the previous one; nothing sleeps."""

    def __init__(self, window: Any, camera: Camera, quit_app: Callable[[], None]) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.camera, self.quit = window, camera, quit_app
        self.train, self.chat = window.train_page, window.chat_page
        self.adapter_name = None
        self.poll = QTimer(interval=500, timeout=self._check_training)
        # Kept here: Qt holds its slots weakly, so a tour nobody refers to would vanish mid-way.
        self.pages = PagesTour(window, camera, quit_app)

    def start(self) -> None:
        self.window.show_page("Train")
        self.train.form.steps_spin.setValue(DEMO_STEPS)
        self.train.runFinished.connect(self._training_finished)
        self.train.start_button.click()
        self.poll.start()

    def _check_training(self) -> None:
        if self.train.loss_plot.point_count() >= MID_RUN_STEPS:
            self.poll.stop()
            self.train.loss_plot.redraw()
            self.train.memory_plot.redraw()
            self.camera.grab("train-page.png")

    def _training_finished(self, event: Any) -> None:
        self.poll.stop()
        if event.status != RunStatus.COMPLETED:
            print(f"the demo run did not complete: {event.error}", file=sys.stderr)
            self.quit()
            return
        self.adapter_name = Path(event.adapter).name
        self.window.show_page("Adapters")
        self.camera.grab("adapters-page.png")
        self.window.show_page("Chat")
        self.chat.model_picker.set_ref("starter")
        self.chat.adapter_picker.set_ref(None)
        self.chat.sessionChanged.connect(self._ask_base)
        self.chat.load_button.click()

    def _ask(self) -> None:
        self.chat.message_box.setPlainText(QUESTION)
        self.chat.send_button.click()

    def _ask_base(self) -> None:
        self.chat.sessionChanged.disconnect(self._ask_base)
        self.chat.replyFinished.connect(self._base_replied)
        self._ask()

    def _base_replied(self, reply: Any) -> None:
        self.chat.replyFinished.disconnect(self._base_replied)
        self.chat.sessionChanged.connect(self._ask_adapter)
        self.chat.adapter_picker.set_ref(self.adapter_name)  # hot-swaps the adapter in

    def _ask_adapter(self) -> None:
        self.chat.sessionChanged.disconnect(self._ask_adapter)
        self.chat.replyFinished.connect(self._adapter_replied)
        self._ask()

    def _adapter_replied(self, reply: Any) -> None:
        from PySide6.QtCore import QTimer

        # Let the page re-enable its controls (it does so after this signal) before the grab.
        QTimer.singleShot(0, self._chat_done)

    def _chat_done(self) -> None:
        self.camera.grab("chat-page.png")
        evaluate = self.window.evaluate_page
        self.window.show_page("Evaluate")
        evaluate.model_picker.set_ref("starter")
        evaluate.setup.set_checked([self.adapter_name])
        evaluate.setup.use_dataset(self.train.dataset_picker.current_path())  # the pirate sample it trained on
        evaluate.setup.limit_spin.setValue(EVAL_ROWS)
        evaluate.setup.max_tokens_spin.setValue(EVAL_TOKENS)
        evaluate.evaluationEnded.connect(self._evaluated)
        evaluate.run_button.click()

    def _evaluated(self, outcome: str) -> None:
        evaluate = self.window.evaluate_page
        if outcome == "finished":
            self.camera.grab("evaluate-page.png")
        else:
            print(f"the demo evaluation did not finish: {evaluate.message_label.text()}", file=sys.stderr)
        self.serve()

    def serve(self) -> None:
        serve = self.window.serve_page
        self.window.show_page("Serve")  # lists the adapters made for the starter
        serve.adaptersListed.connect(self._serve_listed)
        serve.model_picker.set_ref("starter")

    def _serve_listed(self) -> None:
        serve = self.window.serve_page
        serve.adaptersListed.disconnect(self._serve_listed)
        serve.form.set_checked([self.adapter_name])
        serve.form.port_spin.setValue(0)  # any free port
        serve.servingChanged.connect(self._serving)
        serve.start_button.click()

    def _serving(self, state: str) -> None:
        import threading

        serve = self.window.serve_page
        serve.servingChanged.disconnect(self._serving)
        if state != "serving":
            print(f"the demo server did not start: {serve.error_label.text()}", file=sys.stderr)
            self.pages.start()
            return
        serve.requestsLogged.connect(self._served)
        # A client of its own, as an editor or a script is: the UI thread never waits for the reply.
        threading.Thread(target=ask_server, args=(serve.server.url, self.adapter_name), daemon=True).start()

    def _served(self, _events: list) -> None:
        from PySide6.QtCore import QTimer

        self.window.serve_page.requestsLogged.disconnect(self._served)
        QTimer.singleShot(1500, self._serve_done)  # the live figures are polled once a second

    def _serve_done(self) -> None:
        serve = self.window.serve_page
        serve.connect_panel.model_combo.setCurrentText(self.adapter_name)  # the snippets ask the adapter
        self.camera.grab("serve-page.png")
        serve.servingChanged.connect(self._served_and_stopped)
        serve.stop_button.click()

    def _served_and_stopped(self, _state: str) -> None:
        self.window.serve_page.servingChanged.disconnect(self._served_and_stopped)
        self.pages.start()


def ask_server(url: str, model: str) -> None:
    """Ask the demo's question through the server's chat endpoint, as any HTTP client does."""
    import urllib.request

    body = {"model": model, "max_tokens": EVAL_TOKENS, "messages": [{"role": "user", "content": QUESTION}]}
    request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        answer.read()


def offscreen_platform(size: tuple[int, int]) -> str:
    """Qt's offscreen platform with a screen room enough for a window of ``size`` and its frame:
    its own screen is 800x800, and the window shrinks to fit the screen it opens on."""
    width, height = size[0] + 100, size[1] + 100
    screen = Path(tempfile.mkdtemp(prefix="lora-studio-screen-")) / "screen.json"
    screen.write_text(json.dumps({"screens": [{"name": "shots", "x": 0, "y": 0, "width": width, "height": height,
                                               "logicalDpi": 96, "dpr": 1}]}), encoding="utf-8")
    return f"offscreen:configfile={screen}"


def _size(text: str) -> tuple[int, int]:
    width, _x, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str]) -> int:
    pages_only = "--pages" in argv
    args = [arg for arg in argv if arg != "--pages"]
    size = SIZE
    if "--size" in args:
        at = args.index("--size")
        size = _size(args[at + 1])
        del args[at:at + 2]
    out = Path(args[0] if args else "docs").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", offscreen_platform(size))
    os.environ["LORA_STUDIO_HOME"] = tempfile.mkdtemp(prefix="lora-studio-shots-")

    from PySide6.QtCore import QTimer

    from studio.app import start
    from studio.settings import app_settings
    from studio.widgets.first_run_guide import DISMISSED_KEY

    app_settings().set(DISMISSED_KEY, True)  # the guide is a panel over part of the page, not part of it
    app, window = start(sys.argv[:1])
    window.resize(*size)
    camera = Camera(window, out)
    tour = PagesTour(window, camera, app.quit) if pages_only else DemoTour(window, camera, app.quit)
    window.librariesLoaded.connect(tour.start)  # the status bar has nothing to say any more
    QTimer.singleShot(TIMEOUT_MS, app.quit)
    app.exec()
    window.chat_page.close_session()
    window.close()
    wanted = {"home-page.png", "models-page.png", "data-page.png"}
    if not pages_only:
        wanted |= {"train-page.png", "adapters-page.png", "chat-page.png", "evaluate-page.png", "serve-page.png"}
    missing = wanted - camera.written
    if missing:
        print(f"not taken: {', '.join(sorted(missing))}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
