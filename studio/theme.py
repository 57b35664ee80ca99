"""Light and dark, following the system.

Qt (6.5 and later) reports the system's colour scheme, ``QStyleHints.colorScheme()``, and
announces a change with ``colorSchemeChanged``. Native styles switch their palette with
it; where the style keeps its light palette under a dark scheme (Fusion on several Linux
desktops) a dark palette is set here. Qt widgets then follow the palette by themselves;
what draws its own colours reads them from ``colours()``: the pyqtgraph plots (restyled on
every change once passed to ``style_plot``), the runs' mini curves, coloured text.

Importing this module does not import pyqtgraph: the window opens before the plotting
library is needed.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette


@dataclass(frozen=True)
class Colours:
    dark: bool
    text: str  # titles and labels that plots draw themselves
    muted: str  # secondary text: notes, keys beside their values
    plot_background: str
    plot_axes: str
    error: str
    curves: tuple[str, ...]  # one per curve, in order


LIGHT = Colours(
    dark=False, text="#333333", muted="#6b6b6b", plot_background="#ffffff", plot_axes="#555555",
    error="#c0392b", curves=("#2f7ed8", "#e4572e", "#17a589", "#8e44ad", "#d4a017", "#5d6d7e"),
)
DARK = Colours(
    dark=True, text="#e8e8e8", muted="#a6a6a6", plot_background="#1f2023", plot_axes="#b8b8b8",
    error="#ff7b6b", curves=("#5aa9ff", "#ff8a5c", "#3ddbb8", "#c39bff", "#f4d03f", "#aab7c4"),
)


class _Theme(QObject):
    changed = Signal(object)  # the new Colours

    def __init__(self) -> None:
        super().__init__()
        self.colours = LIGHT
        self.light_palette: Optional[QPalette] = None  # the style's own, while a dark one is set here
        self.plots: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.following = False


_theme: Optional[_Theme] = None


def _state() -> _Theme:
    global _theme
    if _theme is None:
        _theme = _Theme()
    return _theme


def colours() -> Colours:
    """The colours of the scheme in use now."""
    return _state().colours


def on_change(callback: Callable[[Colours], None]) -> None:
    """Call ``callback(colours)`` whenever the scheme changes."""
    _state().changed.connect(callback)


def follow_system(app: QGuiApplication) -> None:
    """Use the system's scheme now and whenever it changes."""
    hints = app.styleHints()
    apply_scheme(hints.colorScheme())
    state = _state()
    if not state.following:
        hints.colorSchemeChanged.connect(apply_scheme)
        state.following = True


def apply_scheme(scheme: Qt.ColorScheme) -> None:
    """Switch the whole studio to ``scheme`` (Unknown: whatever the palette is)."""
    app = QGuiApplication.instance()
    state = _state()
    palette_is_dark = app.palette().color(QPalette.ColorRole.Window).lightness() < 128
    dark = palette_is_dark if scheme == Qt.ColorScheme.Unknown else scheme == Qt.ColorScheme.Dark
    if dark and not palette_is_dark:
        state.light_palette = QPalette(app.palette())
        app.setPalette(_dark_palette())
    elif not dark and state.light_palette is not None:
        app.setPalette(state.light_palette)
        state.light_palette = None
    state.colours = DARK if dark else LIGHT
    if "pyqtgraph" in sys.modules:
        _configure_pyqtgraph(state.colours)
    for plot in list(state.plots):
        _restyle(plot, state.colours)
    state.changed.emit(state.colours)


def style_plot(plot_widget: Any) -> None:
    """Give a ``pyqtgraph.PlotWidget`` the scheme's colours, now and after every change."""
    state = _state()
    _configure_pyqtgraph(state.colours)
    state.plots.add(plot_widget)
    _restyle(plot_widget, state.colours)


def _configure_pyqtgraph(colours: Colours) -> None:
    """The defaults for plot items created from now on (legends, labels added later)."""
    import pyqtgraph as pg

    pg.setConfigOptions(background=colours.plot_background, foreground=colours.plot_axes)


def _restyle(plot_widget: Any, colours: Colours) -> None:
    import shiboken6

    if not shiboken6.isValid(plot_widget):
        return
    plot_widget.setBackground(colours.plot_background)
    plot_item = plot_widget.getPlotItem()
    for axis in plot_item.axes.values():
        axis["item"].setPen(colours.plot_axes)
        axis["item"].setTextPen(colours.plot_axes)
    title = plot_item.titleLabel
    if title.text:
        title.setText(title.text, color=colours.text)
    legend = plot_item.legend
    if legend is not None:
        legend.setLabelTextColor(colours.text)
        for _sample, label in legend.items:
            label.setText(label.text)  # the new colour shows once the text is laid out again


def _dark_palette() -> QPalette:
    palette = QPalette()
    roles = QPalette.ColorRole
    for role, colour in (
        (roles.Window, "#2b2d30"), (roles.WindowText, "#e8e8e8"), (roles.Base, "#1f2023"),
        (roles.AlternateBase, "#2b2d30"), (roles.Text, "#e8e8e8"), (roles.Button, "#35373b"),
        (roles.ButtonText, "#e8e8e8"), (roles.BrightText, "#ffffff"), (roles.Highlight, "#2f6fc0"),
        (roles.HighlightedText, "#ffffff"), (roles.ToolTipBase, "#35373b"), (roles.ToolTipText, "#e8e8e8"),
        (roles.Link, "#6cb4ff"), (roles.LinkVisited, "#c39bff"), (roles.PlaceholderText, "#8c8c8c"),
        (roles.Light, "#45474b"), (roles.Midlight, "#3a3c40"), (roles.Mid, "#2f3134"),
        (roles.Dark, "#1a1b1d"), (roles.Shadow, "#000000"),
    ):
        palette.setColor(role, QColor(colour))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7a7a7a"))
    return palette
