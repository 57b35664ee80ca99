"""Screenshots of the real app for the README, so the pictures never go stale.

    python -m studio.screenshots [OUT_DIR]     (default: docs/)

Plays the first-run demo through the real widgets, offscreen, in a scratch
LORA_STUDIO_HOME: starts a run of the starter model on the pirate sample from
the Train page and grabs the page once the loss curve has some points; lets the
run finish and grabs the Adapters page; then loads the starter on the Chat page,
asks one question without and one with the new adapter, and grabs the replies.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

MID_RUN_STEPS = 12
DEMO_STEPS = 60
QUESTION = "What is the capital of France?"
TIMEOUT_MS = 30 * 60 * 1000


class DemoTour:
    """Each step waits for the signal that ends the previous one; nothing sleeps."""

    def __init__(self, window: Any, out: Path, quit_app: Callable[[], None]) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.out, self.quit = window, out, quit_app
        self.train, self.chat = window.train_page, window.chat_page
        self.adapter_name = None
        self.poll = QTimer(interval=500, timeout=self._check_training)

    def start(self) -> None:
        self.window.show_page("Train")
        self.train.steps_spin.setValue(DEMO_STEPS)
        self.train.runFinished.connect(self._training_finished)
        self.train.start_button.click()
        self.poll.start()

    def grab(self, name: str) -> None:
        self.window.grab().save(str(self.out / name))
        print(f"wrote {self.out / name}", flush=True)

    def _check_training(self) -> None:
        if self.train.loss_plot.point_count() >= MID_RUN_STEPS:
            self.poll.stop()
            self.train.loss_plot.redraw()
            self.train.memory_plot.redraw()
            self.grab("train-page.png")

    def _training_finished(self, event: Any) -> None:
        self.poll.stop()
        if event.status != "completed":
            print(f"the demo run did not complete: {event.error}", file=sys.stderr)
            self.quit()
            return
        self.adapter_name = Path(event.adapter).name
        self.window.show_page("Adapters")
        self.grab("adapters-page.png")
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
        QTimer.singleShot(0, lambda: (self.grab("chat-page.png"), self.quit()))


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["LORA_STUDIO_HOME"] = tempfile.mkdtemp(prefix="lora-studio-shots-")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from studio.main_window import MainWindow

    app = QApplication(sys.argv[:1])
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    tour = DemoTour(window, out, app.quit)
    tour.start()
    QTimer.singleShot(TIMEOUT_MS, app.quit)
    app.exec()
    window.chat_page.close_session()
    window.close()
    return 0 if (out / "chat-page.png").exists() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
