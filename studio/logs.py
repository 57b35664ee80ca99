"""The studio's own log: ``studio_home()/logs/studio.log``.

Python ``logging`` (the studio's and the engine's loggers), warnings (through
``logging.captureWarnings``) and exceptions nobody caught, on any thread, go to a
rotating file. Nothing here touches a Qt object: the handler writes to the file from
whichever thread logs, and the Logs window (``studio.widgets.log_viewer``) reads the
file on the UI thread. A warning raised on a worker thread can therefore never reach a
widget from the wrong thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType
from typing import Optional

from engine.paths import studio_home

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 3

log = logging.getLogger("studio")
_handler: Optional[RotatingFileHandler] = None
_previous_thread_hook = threading.excepthook


def log_file() -> Path:
    return studio_home() / "logs" / "studio.log"


def start_logging() -> Optional[Path]:
    """Send logging, warnings and uncaught thread exceptions to the log file; returns its path,
    or None where it cannot be written (a read-only home: the log goes to standard error).

    Called again (another app data folder), it moves to the new file.
    """
    global _handler
    stop_logging()
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        _handler, path = logging.StreamHandler(), None
    _handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(_handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    return path


def stop_logging() -> None:
    global _handler
    if _handler is None:
        return
    logging.getLogger().removeHandler(_handler)
    _handler.close()
    _handler = None
    logging.captureWarnings(False)
    threading.excepthook = _previous_thread_hook


def log_exception(exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> str:
    """Log an exception nobody caught; returns its traceback as text."""
    details = "".join(traceback.format_exception(exc_type, exc, tb))
    log.error("Uncaught exception\n%s", details.rstrip())
    return details


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    log_exception(args.exc_type, args.exc_value, args.exc_traceback)
    _previous_thread_hook(args)


def read_tail(path: Path, max_bytes: int) -> tuple[str, int]:
    """The last ``max_bytes`` of ``path`` (from a line start) and the offset where it ends."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            start = max(0, end - max_bytes)
            handle.seek(start)
            data = handle.read(end - start)
    except OSError:
        return "", 0
    if start > 0 and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data.decode("utf-8", errors="replace"), end


def read_from(path: Path, offset: int) -> tuple[str, int, bool]:
    """What was appended after ``offset``: (text, new offset, whether the file started over).

    A log that rotated (or was emptied) is shorter than the offset: it is read from its start.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            restarted = end < offset
            handle.seek(0 if restarted else offset)
            data = handle.read()
    except OSError:
        return "", offset, False
    # Only complete lines: a line being written is read with the next call.
    complete = data[: data.rfind(b"\n") + 1]
    new_offset = (0 if restarted else offset) + len(complete)
    return complete.decode("utf-8", errors="replace"), new_offset, restarted
