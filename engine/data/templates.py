"""Chat templates are code: a model's or an adapter's template is a Jinja program written by
whoever made it, run on the user's conversations. Jinja's sandbox stops it reaching Python's
internals, but not from looping for hours, building gigabytes or failing in ways Jinja does not
name. Every template is therefore rendered here, within bounds:

- time: an alarm (one watchdog thread for the whole process) raises an exception into the
  rendering thread once ``MAX_SECONDS`` have passed, wherever its Python code is, loops without
  any call included; compiling counts too, as Jinja folds constant expressions when it compiles;
- memory: the watchdog also ends a render once the process has grown by ``MAX_GROWTH_BYTES``
  while it ran, and the operations that build a large value in one step of C code, where no
  alarm can interrupt them (``'x' * n``, ``n ** m``, ``'%999999999d'``, ``center(n)``,
  ``replace``, ``join``, ``indent``), are checked before they run;
- output: the rendered text, and every string or list the template builds on the way, holds at
  most ``MAX_CHARS`` characters (items); the template itself at most ``MAX_TEMPLATE_CHARS``.

Any failure of the template (a bound, Jinja's own errors, or whatever Python raised inside it)
becomes one ``StudioError`` line naming whose template it is. The environment mirrors the one
transformers renders with (``transformers.utils.chat_template_utils``): the same options,
extensions, filters and globals, so a template renders here exactly as it does there.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from engine.errors import StudioError, first_line

# The bounds; tests lower them. A real chat template renders a row in well under a millisecond,
# is a few kilobytes long and writes about as much as the conversation it is given.
MAX_SECONDS = 5.0
MAX_CHARS = 10_000_000
MAX_TEMPLATE_CHARS = 256 * 1024
MAX_GROWTH_BYTES = 2 * 1024**3
MAX_INT_BITS = 100_000  # about 30,000 digits: far beyond any count a template needs
_MEMORY_POLL_SECONDS = 0.1


# Templates refused in this process, with the reason.
_REFUSED: dict[str, str] = {}


class TemplateRefused(StudioError):
    """The template itself is at fault, whatever the conversation: a caller going through many
    rows stops at the first of these instead of counting every row as bad."""


class _OverLimit(BaseException):
    """A bound was reached. A BaseException, so that no ``except Exception`` in Jinja or in a
    filter can swallow it on its way out of the render."""

    reason = "went over its limits"

    def __init__(self, reason: Optional[str] = None) -> None:
        super().__init__(reason or self.reason)
        if reason:
            self.reason = reason


class _TimedOut(_OverLimit):
    # Raised by the watchdog into the rendering thread, as a class (no arguments).
    @property
    def reason(self) -> str:  # type: ignore[override]
        return f"ran for more than {_seconds(MAX_SECONDS)} (it loops too long)"


class _TooMuchMemory(_OverLimit):
    @property
    def reason(self) -> str:  # type: ignore[override]
        return f"used more than {MAX_GROWTH_BYTES / 1024**2:,.0f} MB of memory"


def _seconds(value: float) -> str:
    return f"{value:g} s"


# rendering ---------------------------------------------------------------------------------------
def render_template(template: str, owner: str, context: dict[str, Any]) -> str:
    """``template`` rendered with ``context``, within the bounds. ``owner`` names whose template
    it is in messages ("model 'x'", "adapter 'y'").

    A ``jinja2.TemplateError`` raised while rendering (``raise_exception`` in the template, an
    undefined variable) is about this conversation: a plain StudioError. Everything else is
    about the template: ``TemplateRefused``.
    """
    from jinja2 import TemplateError, TemplateSyntaxError
    from jinja2.sandbox import SecurityError

    def refused(reason: str) -> TemplateRefused:
        if len(_REFUSED) >= 32:
            _REFUSED.clear()
        _REFUSED[template] = reason
        return TemplateRefused(f"the chat template of {owner} {reason}; it cannot be used")

    if template in _REFUSED:
        # Refused once, refused at once: a pass over many rows that counts each failure as a bad
        # row does not wait out the time bound on every one of them.
        raise refused(_REFUSED[template])
    if len(template) > MAX_TEMPLATE_CHARS:
        raise refused(f"is {len(template):,} characters long, more than the {MAX_TEMPLATE_CHARS:,} allowed")
    try:
        return _within_deadline(lambda: _compiled(template).render(**context))
    except _OverLimit as exc:
        raise refused(exc.reason) from None
    except TemplateSyntaxError as exc:
        raise refused(f"is not valid Jinja (line {exc.lineno}): {first_line(exc, 200)}") from None
    except SecurityError as exc:
        raise refused(f"tried something the sandbox forbids: {first_line(exc, 200)}") from None
    except TemplateError as exc:
        raise StudioError(f"the chat template of {owner} failed on a conversation: {first_line(exc, 200)}") from None
    except RecursionError:
        raise refused("recurses without end") from None
    except MemoryError:
        raise refused("ran out of memory") from None
    except Exception as exc:  # the template is untrusted code: whatever it raised is its failure
        raise refused(f"failed: {type(exc).__name__}: {first_line(exc, 200)}") from None


@functools.lru_cache(maxsize=32)
def _compiled(template: str) -> Any:
    return _environment().from_string(template)


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    """Our bounded environment, set up as transformers sets up its own: its options, extensions
    (``{% generation %}``, loop controls), filters and globals are copied from a template it
    compiled, so the two stay the same as transformers changes."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    theirs = _compile_jinja_template("").environment
    ours = _bounded_environment_class()(
        trim_blocks=theirs.trim_blocks, lstrip_blocks=theirs.lstrip_blocks,
        keep_trailing_newline=theirs.keep_trailing_newline,
        extensions=[type(extension) for extension in theirs.extensions.values()],
    )
    ours.filters.update({name: f for name, f in theirs.filters.items() if name not in ours.filters})
    ours.filters["tojson"] = theirs.filters["tojson"]
    ours.globals.update({name: value for name, value in theirs.globals.items() if name != "range"})
    ours.filters = {name: _bounded_call(name, f) for name, f in ours.filters.items()}
    return ours


# per-operation checks ----------------------------------------------------------------------------
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


def _checked(value: Any) -> Any:
    """``value``, unless it is a string or collection longer than the bound."""
    if _size(value) > MAX_CHARS:
        raise _OverLimit(f"built a value of {_size(value):,} characters or items, more than the {MAX_CHARS:,} allowed")
    return value


def _refuse_over(estimate: int, what: str) -> None:
    if estimate > MAX_CHARS:
        raise _OverLimit(f"{what} of about {estimate:,} characters or items, more than the {MAX_CHARS:,} allowed")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before it runs, an operator whose result alone would be over the bounds."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _OverLimit("multiplies numbers too large to compute")
        if isinstance(left, int) and _size(right):
            _refuse_over(left * _size(right), "repeats a value into one")
        if isinstance(right, int) and _size(left):
            _refuse_over(right * _size(left), "repeats a value into one")
    elif operator == "**" and ints and abs(left) > 1 and right > 0:
        if right * left.bit_length() > MAX_INT_BITS:
            raise _OverLimit("raises a number to a power too large to compute")
    elif operator == "%" and isinstance(left, str):
        _check_format_widths(left, _PERCENT_WIDTH)


# The width and precision in '%-09.3f' and in '{0:>9.3}'. Each part a character class of its own,
# so that matches are found in time linear in the string (and the loop over them is under the alarm).
_PERCENT_WIDTH = r"%[-#0 +]*(?=[\d.])(\d*)(?:\.(\d*))?"
_BRACE_WIDTH = r"\{[^{}:]*:[^{}\d]*(\d+)(?:\.(\d+))?"


def _check_format_widths(text: str, pattern: str) -> None:
    # A width written in the format string ('%999999999d', '{:>999999999}') pads in C, at once.
    for match in re.finditer(pattern, text):
        for digits in match.groups():
            if digits and (len(digits) > 18 or int(digits) > MAX_CHARS):
                raise _OverLimit(f"pads a value to a width over the {MAX_CHARS:,} characters allowed")


# Calls (methods and filters) that can write far more than they are given, in one step of C code:
# a bound on their result from their arguments. The first argument is the string (or list) a
# method is called on, or a filter's value.
def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any, **__: Any) -> int:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    occurrences = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(s) + occurrences * len(new)


def _join_size(separator: Any, items: Any, *_: Any, **__: Any) -> int:
    if not isinstance(items, (list, tuple)) or not isinstance(separator, str):
        return 0
    return sum(_size(item) for item in items) + len(separator) * len(items)


def _filter_join_size(items: Any, d: Any = "", *args: Any, **kwargs: Any) -> int:
    return _join_size(kwargs.get("d", d), items)


def _indent_size(s: Any, width: Any = 4, *_: Any, **kwargs: Any) -> int:
    width = kwargs.get("width", width)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return _size(s) + (s.count("\n") + 1) * step if isinstance(s, str) else 0


def _expandtabs_size(s: Any, tabsize: Any = 8, *_: Any, **kwargs: Any) -> int:
    tabsize = kwargs.get("tabsize", tabsize)
    return len(s) + s.count("\t") * tabsize if isinstance(s, str) and isinstance(tabsize, int) else 0


_RESULT_SIZE: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": _join_size,
    "expandtabs": _expandtabs_size,
}
_FILTER_RESULT_SIZE: dict[str, Callable[..., int]] = {
    "replace": lambda *args, **kwargs: _replace_size(*[a for a in args if not _is_context(a)], **kwargs),
    "join": lambda *args, **kwargs: _filter_join_size(*[a for a in args if not _is_context(a)], **kwargs),
    "indent": _indent_size,
}


def _is_context(value: Any) -> bool:
    # Filters marked pass_eval_context / pass_context get Jinja's context first.
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, (EvalContext, Context))


def _check_call(name: str, sizes: dict[str, Callable[..., int]], args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        # A count or a width ('x'|center(n), batch(n), 'x'.zfill(n)) becomes that many characters.
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CHARS:
            raise _OverLimit(f"asks {name} for {value:,} characters or items, more than the {MAX_CHARS:,} allowed")
    if name == "format" and args and isinstance(args[0], str):
        _check_format_widths(args[0], f"{_PERCENT_WIDTH}|{_BRACE_WIDTH}")
    estimate = sizes.get(name)
    if estimate is not None:
        _refuse_over(estimate(*args, **kwargs), f"asks {name} for a value")


def _bounded_call(name: str, function: Callable) -> Callable:
    """``function`` (a filter) with its arguments checked before and its result after."""

    @functools.wraps(function)  # keeps Jinja's pass_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_call(name, _FILTER_RESULT_SIZE, args, kwargs)
        return _checked(function(*args, **kwargs))

    return bounded


def _method_name(obj: Any) -> tuple[str, tuple]:
    """The name of a bound method of a str (or bytes) and that string, for ``_RESULT_SIZE``."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if isinstance(owner, (str, bytes)):
        return getattr(target, "__name__", ""), (owner,)
    return getattr(target, "__name__", type(obj).__name__), ()


@functools.lru_cache(maxsize=1)
def _bounded_environment_class() -> type:
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # ``a ~ b`` joins through the environment's bounded concat, like every output buffer.
            self.write("environment.concat((str(value) for value in (")
            for argument in node.nodes:
                self.visit(argument, frame)
                self.write(", ")
            self.write(")))")

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        code_generator_class = BoundedCodeGenerator
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            # ``+`` is checked after it runs: both sides are within the bound already, and
            # templates add strings all the time (this is the renders' hot path).
            if operator != "+":
                _check_binop(operator, left, right)
            return _checked(self.binop_table[operator](left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            name, owner = _method_name(__obj)
            _check_call(name, _RESULT_SIZE, owner + args, kwargs)
            return _checked(super().call(__context, __obj, *args, **kwargs))

        def concat(self, pieces: Any) -> str:  # type: ignore[override]
            """The template's output, a macro's or a block's: joined only while within the bound."""
            total, parts = 0, []
            for piece in pieces:
                total += len(piece)
                if total > MAX_CHARS:
                    raise _OverLimit(f"writes more than the {MAX_CHARS:,} characters allowed")
                parts.append(piece)
            return "".join(parts)

    return BoundedEnvironment


# time and memory ---------------------------------------------------------------------------------
def _within_deadline(work: Callable[[], str]) -> str:
    alarm = _watchdog.arm(MAX_SECONDS)
    try:
        return work()
    finally:
        _watchdog.disarm(alarm)


@dataclass(eq=False)
class _Alarm:
    thread: int
    deadline: float
    fired: bool = False
    memory_at_start: Optional[int] = field(default=None)


def _raise_in(thread: int, exception: Optional[type]) -> None:
    """Raise ``exception`` in ``thread`` at its next Python instruction (None: cancel a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exception)
                                               if exception is not None else ctypes.c_void_p(0))


class _Watchdog:
    """One thread for the whole process that raises ``_TimedOut`` (or ``_TooMuchMemory``) into a
    rendering thread past its alarm. It sleeps until the earliest deadline, looking at the
    process's memory every ``_MEMORY_POLL_SECONDS`` meanwhile; an alarm costs the render a lock
    and a dictionary entry, and wakes nobody up."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._alarms: dict[int, _Alarm] = {}
        self._waiting_until: Optional[float] = None  # None: asleep until an alarm is set
        self._last_armed = 0.0
        self._started = False
        self._process: Any = None

    def arm(self, seconds: float) -> _Alarm:
        now = time.monotonic()
        alarm = _Alarm(threading.get_ident(), now + seconds)
        with self._cv:
            self._alarms[id(alarm)] = alarm
            self._last_armed = now
            if not self._started:
                threading.Thread(target=self._run, name="template-watchdog", daemon=True).start()
                self._started = True
            if self._waiting_until is None or alarm.deadline < self._waiting_until:
                self._cv.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        while True:
            try:
                with self._cv:
                    self._alarms.pop(id(alarm), None)
                    if alarm.fired:
                        _raise_in(alarm.thread, None)  # fired as the render ended: not raised yet
                return
            except _OverLimit:
                continue  # it was raised here, on the way out: the alarm is gone all the same

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                for alarm in self._alarms.values():
                    if not alarm.fired:
                        self._check(alarm, now)
                deadlines = [alarm.deadline for alarm in self._alarms.values() if not alarm.fired]
                # Through a run of short renders (a data pass) it keeps polling instead of going
                # idle after each: an alarm set meanwhile then wakes nobody up.
                busy = deadlines or now - self._last_armed < 1.0
                self._waiting_until = min([*deadlines, now + _MEMORY_POLL_SECONDS]) if busy else None
                self._cv.wait(None if self._waiting_until is None else max(0.0, self._waiting_until - now))

    def _check(self, alarm: _Alarm, now: float) -> None:
        if alarm.deadline <= now:
            alarm.fired = True
            _raise_in(alarm.thread, _TimedOut)
            return
        # A render this long is seen again at every poll: from the first, its memory is watched.
        if self._process is None:
            import psutil

            self._process = psutil.Process()
        memory = self._process.memory_info().rss
        if alarm.memory_at_start is None:
            alarm.memory_at_start = memory
        elif memory - alarm.memory_at_start > MAX_GROWTH_BYTES:
            alarm.fired = True
            _raise_in(alarm.thread, _TooMuchMemory)


_watchdog = _Watchdog()


def _after_fork() -> None:
    # A forked child (the training process) has no watchdog thread, and may have inherited its lock held.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)
