"""Warm starts for training runs: a standby process that has imported the training stack
once forks each new run, so a run starts training at once instead of spending 10-15 s
of CPU importing torch, transformers, peft and bitsandbytes first.

The run is still a process of its own, in its own session, running ``engine.train``'s
``main`` on its run directory with the caller's environment and working folder, its
output in the run's log: everything ``engine.jobs.training_job`` promises (a crash never takes the
caller down, stop is immediate, training outlives the window) holds. Only the start
differs, the way torch's DataLoader workers are forked from an already-imported parent.

Forking is only safe where the standby has not initialised CUDA (a forked child cannot
use a context it inherited) and on Linux (macOS system frameworks are not fork-safe).
With a CUDA or ROCm build of torch it would have: importing bitsandbytes (which
transformers' Trainer does) queries the devices' compute capability, which initialises
CUDA. So warm starts are for Linux machines with a CPU build of torch, and the standby
itself checks that nothing initialised CUDA before it forks anything. A caller whose
environment differs from the standby's in anything the imports may have read gets a
fresh standby. Where a warm start cannot be had, ``start_run`` returns None and the
caller starts the run cold (``python -m engine.train RUN_DIR``), as everywhere else.

Opt-in: the studio enables it (it starts many runs in one long session); the one-shot
CLI does not, since its standby would import the stack only to serve a single run.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

from engine.core.child_python import python_module_command
from engine.jobs.child_env import child_environment

# Environment variables read when a run's code calls for them, not while the stack is
# imported: a standby started under other values can still serve a run that sets them.
_CALL_TIME_VARIABLES = ("LORA_STUDIO_",  # engine.paths reads the home folder on every call
                        "PYTEST_CURRENT_TEST")  # pytest sets it anew for each test
READY_TIMEOUT_S = 300.0  # the standby's imports: 10-15 s on two cores, more on a busy machine
REPLY_TIMEOUT_S = 30.0
_REAP_S = 0.1

_lock = threading.Lock()
_enabled = False
_standby: Optional["Standby"] = None
_refused = False  # a standby found forking unsafe here, or died importing: never start another


def supported() -> bool:
    """Linux, with a torch build that has no GPU runtime (see the module's note)."""
    if not sys.platform.startswith("linux") or _refused:
        return False
    import torch

    return not (torch.version.cuda or torch.version.hip)


def enable(warm_up: bool = True) -> None:
    """Use warm starts from now on in this process. ``warm_up`` starts the standby importing
    now, in the background, so that the first run is warm too; otherwise the first run
    starts it (and waits for it about as long as a cold start would have taken)."""
    global _enabled
    if not supported():
        return
    _enabled = True
    # Never wait here: if the lock is taken, a run is being started and starts the standby itself.
    if warm_up and _lock.acquire(blocking=False):
        try:
            _standby_for(child_environment(dict(os.environ)))
        finally:
            _lock.release()


def disable() -> None:
    """Start runs cold again; the standby ends once the runs it started have ended."""
    global _enabled, _standby
    _enabled = False
    with _lock:
        if _standby is not None:
            _standby.close()
        _standby = None


def start_run(run_dir: Path, log_path: Path, env: dict[str, str]) -> Optional["WarmChild"]:
    """Fork a run from the standby, or None if warm starts are off or cannot be had here.

    Blocks while a standby that is still importing gets ready (no longer than a cold start
    would have spent importing)."""
    global _refused
    if not _enabled or _refused:
        return None
    with _lock:
        standby = _standby_for(env)
        pid = standby.fork_run(run_dir, log_path, env, os.getcwd())
        _refused = standby.refused
    return WarmChild(standby, pid) if pid is not None else None


def _import_time_view(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(_CALL_TIME_VARIABLES)}


def _standby_for(env: dict[str, str]) -> "Standby":
    """The standby that can serve a run with this environment; a new one if the current one
    is gone or was started under an environment the imports may have read differently."""
    global _standby
    if _standby is not None and (not _standby.alive or _import_time_view(_standby.env) != _import_time_view(env)):
        _standby.close()
        _standby = None
    if _standby is None:
        _standby = Standby(env)
    return _standby


class Standby:
    """The caller's side of one standby process: start it, ask it for runs, hear of their ends."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._process = subprocess.Popen(
            python_module_command("engine.jobs.launcher"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, start_new_session=True,  # Ctrl-C in the caller's terminal is the caller's to handle
        )
        self._ready = threading.Event()
        self._usable = False
        self._replies: list[dict] = []
        self._reply = threading.Condition()
        self._exits: dict[int, int] = {}
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="warm-start-standby", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def refused(self) -> bool:
        """Whether it found forking unsafe here, or died before it was ready (its imports fail
        here): either way another standby would do the same."""
        return self._ready.is_set() and not self._usable

    def fork_run(self, run_dir: Path, log_path: Path, env: dict[str, str], cwd: str) -> Optional[int]:
        if not self._ready.wait(READY_TIMEOUT_S) or not self._usable:
            return None
        request = {"run_dir": str(run_dir), "log": str(log_path), "env": env, "cwd": cwd}
        with self._reply:
            self._replies.clear()
            try:
                self._process.stdin.write(json.dumps(request).encode() + b"\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return None
            if not self._reply.wait_for(lambda: self._replies or not self._alive, REPLY_TIMEOUT_S):
                return None
            reply = self._replies.pop(0) if self._replies else {}
        return reply.get("pid")

    def exit_code(self, pid: int) -> Optional[int]:
        """The run's exit code once the standby has reaped it (negative: killed by that signal)."""
        return self._exits.get(pid)

    def close(self) -> None:
        """No more runs from this standby; it ends once the runs it started have ended."""
        try:
            self._process.stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        """Hear the standby until it ends. However this thread ends (the standby gone, a reply it
        cannot parse), the standby counts as gone from then on, so that no wait on it (a fork's
        reply, a run's end in ``WarmChild.exited``) is left waiting on a thread that is dead."""
        try:
            for line in self._process.stdout:
                self._hear(json.loads(line))
            self._process.wait()
        finally:
            self._alive = False
            self._ready.set()
            with self._reply:
                self._reply.notify_all()
            self.close()

    def _hear(self, message: dict) -> None:
        if "ready" in message:
            self._usable = bool(message["ready"])
            self._ready.set()
        elif "exited" in message:
            self._exits[int(message["exited"])] = int(message["returncode"])
        else:
            with self._reply:
                self._replies.append(message)
                self._reply.notify_all()


class WarmChild:
    """A run forked by a standby, as ``engine.jobs.training_job`` watches it: alive, exit code, kill."""

    def __init__(self, standby: Standby, pid: int) -> None:
        self._standby, self.pid = standby, pid

    def exited(self) -> bool:
        if self._standby.exit_code(self.pid) is not None:
            return True
        if self._standby.alive:
            return False
        # The standby is gone (killed): the run, reparented, may still be going.
        import psutil

        try:
            process = psutil.Process(self.pid)
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    @property
    def returncode(self) -> Optional[int]:
        return self._standby.exit_code(self.pid)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone


# The standby process ----------------------------------------------------------------------


def serve() -> int:
    """The standby's loop: import the training stack, say whether forking is safe, then fork
    a run for every request, report each run's end, and end once the caller has gone away
    and the runs it started have ended."""
    replies = os.dup(1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the replies
    from engine.run.priority import yield_cpu_to_the_desktop

    yield_cpu_to_the_desktop()  # its imports, and the runs it forks, give way to the window
    import torch

    from engine.train import recipe  # noqa: F401  (importing the stack once is the point)

    # The imported stack, some 500,000 objects, frozen out of the garbage collector's sight (as the
    # gc module's documentation advises before fork without exec): otherwise a full collection in a
    # run (the Trainer makes one as it ends) scans them all, 0.5 s on two cores, and writing to
    # each one's header copies every page that the run shares with this process.
    gc.collect()
    gc.freeze()
    usable = not torch.cuda.is_initialized()
    _send(replies, {"ready": usable})
    if not usable:
        return 0
    pending, open_requests, running = b"", True, set()
    while open_requests or running:
        readable, _, _ = select.select([0] if open_requests else [], [], [], _REAP_S)
        running -= _report_exits(replies)
        if not readable:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            open_requests = False  # the caller has gone: its runs go on by themselves
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = _fork_run(json.loads(line), replies)
            running.add(pid)
            _send(replies, {"pid": pid})
    return 0


def _send(fd: int, message: dict) -> None:
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the caller has gone; the runs are recorded in their own folders


def _report_exits(replies: int) -> set[int]:
    ended = set()
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.add(pid)
        _send(replies, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _fork_run(request: dict, replies: int) -> int:
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        os.close(replies)
        code = _become_the_run(request)
    except BaseException:  # noqa: B036  (whatever happens, the forked copy must never return into the loop)
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _become_the_run(request: dict) -> int:
    """In the forked child: what ``python -m engine.train RUN_DIR`` would have been."""
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from engine.train import command, recipe

    sys.argv = [recipe.__file__, request["run_dir"]]
    try:
        return command.main([request["run_dir"]])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(serve())
