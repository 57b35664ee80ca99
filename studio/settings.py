"""The studio's settings: one JSON file in the app data folder, ``studio_home()/settings.json``.

What the window remembers (its geometry, splitters and table columns), the last model and
dataset, the recent runs, whether the first-run guide was dismissed, and the Train page's
per-model settings (key ``"train.per_model"``). Keys are dotted names, values anything
JSON holds::

    settings = app_settings()
    per_model = settings.get("train.per_model", {})
    per_model["starter"] = {"rank": 8}
    settings.set("train.per_model", per_model)

Writes are atomic (``engine.core.atomic.write_json``) and debounced: a burst of ``set`` calls (a
splitter being dragged) becomes one write a moment later; ``flush`` writes at once, and the
window calls it when it closes. Use it from the UI thread only.

A missing, empty or unreadable file is replaced by the defaults, with a one-line notice for
the status bar; an unreadable one is first kept beside it as ``settings.json.corrupt-<time>``,
so nothing the user had is lost.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QCoreApplication, QTimer

from engine.core.atomic import write_json
from engine.paths import studio_home

SETTINGS_FILE = "settings.json"
SAVE_DELAY_MS = 500

log = logging.getLogger(__name__)


class Settings:
    def __init__(self, path: Path, values: dict[str, Any], notice: Optional[str] = None) -> None:
        self.path = Path(path)
        self._values = values
        self._notice = notice
        self._timer: Optional[QTimer] = None
        self._dirty = False

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "Settings":
        """The settings in ``path`` (default: the app data folder's settings.json)."""
        path = Path(path) if path is not None else studio_home() / SETTINGS_FILE
        values, notice = _read(path)
        settings = cls(path, values, notice)
        if notice is not None:
            log.warning("%s", notice)
            settings.flush(force=True)  # the defaults replace what could not be used
        return settings

    def take_notice(self) -> Optional[str]:
        """What went wrong reading the file, once (None when it was fine)."""
        notice, self._notice = self._notice, None
        return notice

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the value: changing it changes nothing until it is ``set`` again."""
        return copy.deepcopy(self._values[key]) if key in self._values else default

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (anything JSON holds; TypeError otherwise) and save soon."""
        stored = json.loads(json.dumps(value))
        if key in self._values and self._values[key] == stored:
            return
        self._values[key] = stored
        self._dirty = True
        if QCoreApplication.instance() is None:
            self.flush()
            return
        if self._timer is None:
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.setInterval(SAVE_DELAY_MS)
            self._timer.timeout.connect(self.flush)
        self._timer.start()

    def flush(self, force: bool = False) -> None:
        """Write pending changes now. A failed write is logged and retried with the next change."""
        if self._timer is not None:
            self._timer.stop()
        if not (self._dirty or force):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self._values)
        except OSError as exc:
            log.warning("Could not save the settings to %s: %s", self.path, exc)
            return
        self._dirty = False


_instance: Optional[Settings] = None


def app_settings() -> Settings:
    """The process's settings for the current app data folder (tests give each test its own)."""
    global _instance
    path = studio_home() / SETTINGS_FILE
    if _instance is None or _instance.path != path:
        if _instance is not None:
            _instance.flush()
        _instance = Settings.load(path)
    return _instance


def _read(path: Path) -> tuple[dict[str, Any], Optional[str]]:
    """The stored values and, when they could not be used, why (one line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, f"No settings yet: starting with the defaults (they are kept in {path})"
    except (OSError, UnicodeDecodeError) as exc:
        return {}, _keep_corrupt(path, str(exc))
    if not text.strip():
        return {}, f"{path.name} was empty: starting with the default settings"
    try:
        values = json.loads(text)
    except ValueError as exc:
        return {}, _keep_corrupt(path, f"not valid JSON: {exc}")
    if not isinstance(values, dict):
        return {}, _keep_corrupt(path, "not a JSON object")
    return values, None


def _keep_corrupt(path: Path, reason: str) -> str:
    backup = path.with_name(f"{path.name}.corrupt-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    try:
        path.rename(backup)
    except OSError as exc:
        return f"{path.name} cannot be read ({reason}) nor set aside ({exc}): using the default settings"
    return f"{path.name} could not be read ({reason}): kept it as {backup.name}, using the default settings"
