"""Screenshots of the real app for the README, so the pictures never go stale.

    python -m studio.screenshots [OUT_DIR]     (default: docs/)

Runs the studio offscreen in a scratch LORA_STUDIO_HOME, starts a real run of the
starter model on the pirate sample from the Train page, and grabs the page once
the loss curve has some points; then stops the run and grabs the Adapters page.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

MID_RUN_STEPS = 12
TIMEOUT_MS = 20 * 60 * 1000


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
    train = window.train_page
    window.show_page("Train")
    train.steps_spin.setValue(40)
    train.start_run()

    def grab(name: str) -> None:
        window.grab().save(str(out / name))
        print(f"wrote {out / name}", flush=True)

    def check_progress() -> None:
        if train.loss_plot.point_count() >= MID_RUN_STEPS:
            poll.stop()
            train.loss_plot.redraw()
            train.memory_plot.redraw()
            grab("train-page.png")
            train.stop_run()

    def finish(event: object) -> None:
        window.show_page("Adapters")
        grab("adapters-page.png")
        app.quit()

    poll = QTimer(interval=500, timeout=check_progress)
    poll.start()
    train.runFinished.connect(finish)
    QTimer.singleShot(TIMEOUT_MS, app.quit)
    app.exec()
    window.close()
    return 0 if (out / "train-page.png").exists() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
