"""The first-run guide: the demo in six steps, each opening the page it talks about.

It is a small panel inside the main window, not a window in front of it: each step names
the controls it talks about (``GuideStep.controls``), draws a frame around the first of
them and places the panel where it covers none of them, and as few of the page's other
controls as it can (a window of its own was centred over the page it described, and a
Wayland desktop places such a window where it likes). It follows the window as it is
resized. "Don't show again" is remembered in the settings (``guide.dismissed``);
Help ▸ First-run guide opens it at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPainter, QPaintEvent, QPalette, QPen, QShortcut
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFrame,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from studio.settings import app_settings

DISMISSED_KEY = "guide.dismissed"
MARGIN = 10  # between the panel and the page's edges
WIDTHS = (340, 280)  # the panel's widths tried, widest first
FRAME_PEN = 3  # the width of the frame around the control a step names


@dataclass(frozen=True)
class GuideStep:
    title: str
    page: str  # the sidebar title of the page the step opens
    text: str
    controls: tuple[str, ...]  # the page's attributes holding the controls the text names; the first is framed


STEPS = (
    GuideStep("Welcome", "Home",
              "LoRA Studio teaches a language model a new style or task with a small add-on, an adapter. "
              "This guide walks through the demo: a starter model, a sample dataset, a short training run, "
              "a chat with the result and its scores. Each step opens the page it talks about. The Hardware table "
              "says what this computer trains on.",
              ("devices_table",)),
    GuideStep("The starter model", "Models",
              "SmolLM2-135M-Instruct comes with the studio, small enough to train on a CPU in minutes. It is "
              "prepared the first time it is used (or now, with Prepare starter model). Your own models (a "
              "Hugging Face folder or a GGUF file) are added with the buttons beside it.",
              ("starter_button", "add_folder_button", "add_gguf_button")),
    GuideStep("The sample data", "Data",
              "pirate_persona is about three hundred questions answered by a pirate. The Data page shows how "
              "each row is read, which rows cannot be used, and which tokens the model will learn to write.",
              ("picker", "table", "conversation_view")),
    GuideStep("Train", "Train",
              "The starter model and the pirate sample are already chosen. Press Start (Ctrl+Enter) and watch "
              "the loss fall. The run goes on if you switch pages; the studio tells you when it ends.",
              ("start_button", "loss_plot", "model_picker", "dataset_picker")),
    GuideStep("Chat", "Chat",
              "Press Load model and ask a question with \u201cNo adapter\u201d. Then pick the adapter the run "
              "made in the Adapter list and ask again: the answer now comes from a pirate. Home lists every "
              "run with its curves.",
              ("load_button", "adapter_picker", "message_box", "transcript")),
    GuideStep("Evaluate", "Evaluate",
              "Did it work? Check the run's adapter among the Candidates, pick a dataset or the rows a run held "
              "out, and press Run: the scoreboard compares the adapter with the base model, and the examples "
              "below show their answers side by side.",
              ("candidates_list", "run_button", "scoreboard")),
)

# What a user clicks or types into: the panel covers as little of these as it can.
_CONTROL_TYPES = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QTextEdit, QPlainTextEdit,
                  QAbstractItemView, QGraphicsView)


def _area(first: QRect, second: QRect) -> int:
    overlap = first.intersected(second)
    return 0 if overlap.isEmpty() else overlap.width() * overlap.height()


def place_panel(page: QRect, size_for_width: Callable[[int], QSize], named: list[QRect],
                others: list[QRect]) -> QRect:
    """Where the panel goes on ``page`` (a rectangle of the window): in a corner or at the middle
    of an edge, covering none of the ``named`` controls (the least of them when no place can),
    then as little of the ``others`` as it can; ties go to the first place tried, bottom right."""
    inner = page.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
    best: Optional[tuple[tuple[int, int, int], QRect]] = None
    order = 0
    for width in WIDTHS:
        size = size_for_width(min(width, inner.width()))
        for x in (inner.right() - size.width() + 1, inner.left(), inner.center().x() - size.width() // 2):
            for y in (inner.bottom() - size.height() + 1, inner.top(), inner.center().y() - size.height() // 2):
                place = QRect(QPoint(x, y), size)
                score = (sum(_area(place, rect) for rect in named), sum(_area(place, rect) for rect in others), order)
                order += 1
                if best is None or score < best[0]:
                    best = (score, place)
    assert best is not None
    return best[1]


class ControlFrame(QWidget):
    """A frame drawn around the control a step names; clicks go through it to the control."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.hide()

    def frame(self, control: QRect) -> None:
        self.setGeometry(control.adjusted(-FRAME_PEN - 1, -FRAME_PEN - 1, FRAME_PEN + 1, FRAME_PEN + 1))
        self.show()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Highlight), FRAME_PEN))
        half = FRAME_PEN // 2 + 1
        painter.drawRoundedRect(self.rect().adjusted(half, half, -half, -half), 5, 5)


class FirstRunGuide(QFrame):
    stepShown = Signal(int)

    def __init__(self, show_page: Callable[[str], None], page_of: Callable[[str], QWidget],
                 window: QWidget) -> None:
        super().__init__(window)
        self._show_page = show_page
        self._page_of = page_of
        self._window = window
        self._step = 0
        self._watched: list[QWidget] = []
        self._place_soon = QTimer(self, singleShot=True, interval=0)
        self._place_soon.timeout.connect(self.place)
        self.control_frame = ControlFrame(window)
        self.setAccessibleName("First steps with LoRA Studio")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setStyleSheet("FirstRunGuide { border: 2px solid palette(highlight); border-radius: 6px; "
                           "background: palette(window); }")
        self.step_label = QLabel(self)
        self.title_label = QLabel(self)
        self.title_label.setTextFormat(Qt.TextFormat.RichText)
        self.text_label = QLabel(self)
        self.text_label.setWordWrap(True)
        self.text_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.dismiss_check = QCheckBox("Don't show this guide again", self)
        self.dismiss_check.setChecked(bool(app_settings().get(DISMISSED_KEY, False)))
        self.dismiss_check.toggled.connect(lambda checked: app_settings().set(DISMISSED_KEY, checked))
        self.back_button = QPushButton("Back", self)
        self.back_button.clicked.connect(lambda: self.show_step(self._step - 1))
        self.next_button = QPushButton("Next", self)
        self.next_button.clicked.connect(self._next)
        self.close_button = QPushButton("Close", self)
        self.close_button.setToolTip("Close the guide (Esc); Help ▸ First-run guide opens it again")
        self.close_button.clicked.connect(self.close)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.step_label)
        layout.addWidget(self.title_label)
        layout.addWidget(self.text_label, 1)
        layout.addWidget(self.dismiss_check)
        layout.addLayout(buttons)
        stack = window.findChild(QStackedWidget)
        if stack is not None:  # a page picked in the sidebar: the panel finds its place on it
            stack.currentChanged.connect(lambda _index: self._place_soon.start())
        self.hide()
        self.show_step(0)

    @property
    def step(self) -> int:
        return self._step

    def show_step(self, step: int) -> None:
        """Explain step ``step``, open its page and frame the control it names."""
        self._step = max(0, min(step, len(STEPS) - 1))
        current = STEPS[self._step]
        self.step_label.setText(f"Step {self._step + 1} of {len(STEPS)}")
        self.title_label.setText(f"<h3>{current.title}</h3>")
        self.text_label.setText(current.text)
        self.back_button.setEnabled(self._step > 0)
        self.next_button.setText("Finish" if self._step == len(STEPS) - 1 else "Next")
        self._show_page(current.page)
        self.place()
        self._place_soon.start()  # again once a page built just now is laid out
        self.stepShown.emit(self._step)

    def controls(self) -> list[QWidget]:
        """The controls the current step names, as far as they are on screen now (a user who
        went to another page sees the guide there without a frame)."""
        page = self._page_of(STEPS[self._step].page)
        named = [getattr(page, name) for name in STEPS[self._step].controls]
        return [control for control in named if control.isVisible()]

    def place(self) -> None:
        """Put the panel where it covers none of the step's controls, and frame the first."""
        if not self.isVisible():
            return
        controls = self.controls()
        named = [self._in_window(control) for control in controls]
        others = [self._in_use(widget) for widget in self._page_controls() if widget not in controls]
        self.setGeometry(place_panel(self._page_area(), self._size_for_width, named, others))
        if named:
            self.control_frame.frame(named[0])
        else:
            self.control_frame.hide()
        self.control_frame.raise_()
        self.raise_()
        self._watch(controls)

    def _size_for_width(self, width: int) -> QSize:
        self.layout().invalidate()  # the step's text was just changed: no height remembered for the old one
        return QSize(width, max(self.heightForWidth(width), self.minimumSizeHint().height()))

    def _in_window(self, widget: QWidget) -> QRect:
        """The part of ``widget`` its parents show (a control scrolled out of view takes no room), in
        the window's coordinates."""
        shown = QRect(widget.mapTo(self._window, QPoint(0, 0)), widget.size())
        parent = widget.parentWidget()
        while parent is not None and parent is not self._window:
            shown = shown.intersected(QRect(parent.mapTo(self._window, QPoint(0, 0)), parent.size()))
            parent = parent.parentWidget()
        return shown

    def _in_use(self, widget: QWidget) -> QRect:
        """The part of a control that shows something: a list or table down to its last row (its
        empty rest is what the panel may cover), nothing of an empty log, any other control whole."""
        whole = self._in_window(widget)
        if isinstance(widget, (QTextEdit, QPlainTextEdit)) and widget.isReadOnly() and widget.document().isEmpty():
            return QRect()
        model = widget.model() if isinstance(widget, QAbstractItemView) else None
        if model is None:
            return whole
        rows = model.rowCount()
        last = widget.visualRect(model.index(rows - 1, 0)).bottom() if rows else -1
        filled = widget.viewport().mapTo(widget, QPoint(0, last + 1)).y()
        return QRect(whole.topLeft(), QSize(whole.width(), min(whole.height(), filled)))

    def _page_area(self) -> QRect:
        stack = self._window.findChild(QStackedWidget)
        return self._in_window(stack) if stack is not None else self._window.rect()

    def _page_controls(self) -> Iterable[QWidget]:
        stack = self._window.findChild(QStackedWidget)
        page = stack.currentWidget() if stack is not None else None
        if page is None:
            return []
        return [widget for widget in page.findChildren(QWidget)
                if isinstance(widget, _CONTROL_TYPES) and widget.isVisible()]

    # The panel moves when the window is resized or a named control moves (a splitter dragged,
    # a page laid out once shown): events of those widgets only, while the panel is shown.
    def _watch(self, controls: list[QWidget]) -> None:
        self._unwatch()
        self._watched = [self._window, *controls]
        for widget in self._watched:
            widget.installEventFilter(self)

    def _unwatch(self) -> None:
        for widget in self._watched:
            widget.removeEventFilter(self)
        self._watched = []

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Move, QEvent.Type.Show, QEvent.Type.Hide):
            self._place_soon.start()
        return False

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._place_soon.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self._unwatch()
        self.control_frame.hide()

    def _next(self) -> None:
        if self._step == len(STEPS) - 1:
            self.close()
        else:
            self.show_step(self._step + 1)

