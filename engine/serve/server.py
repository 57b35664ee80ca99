"""``LocalServer``: one base model loaded once, its adapters beside it, answering the OpenAI API
on a local port, on background threads, until it is stopped. The CLI (``lora-studio serve``)
and the Serve page both run one.

The base is loaded into a ``ChatSession`` whose adapter cache holds every served adapter, so no
request ever waits for an adapter to be read from disk. Uvicorn serves the FastAPI app
(``engine.serve.app``) on its own thread with its own event loop; one worker thread generates
(``engine.serve.scheduler``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.core.checks import whole
from engine.errors import StudioError
from engine.serve.events import RequestLogged
from engine.serve.stats import ServeStats, StatsRecorder

DEFAULT_PORT = 8000
STARTUP_TIMEOUT_S = 30.0


@dataclass
class ServeSettings:
    model: str
    adapters: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port (the server's url says which)
    api_key: Optional[str] = None
    device: str = "auto"
    threads: Optional[int] = None  # torch threads for generation; None leaves torch's default
    max_queue: int = 64  # requests waiting beyond these are told 429 with Retry-After
    max_batch: int = 8  # rows generated together

    def check(self) -> None:
        whole("port", self.port, 0, 65535)
        whole("queue size", self.max_queue, 1, 100_000)
        whole("batch size", self.max_batch, 1, 256)
        if self.api_key is not None and not self.api_key.strip():
            raise StudioError("the API key is empty: give one, or leave --api-key out")
        if not is_loopback(self.host) and self.api_key is None:
            raise StudioError(f"serving on {self.host} lets other machines in: give an API key (--api-key) they "
                              "must send, or serve on 127.0.0.1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only lets this machine in (127.0.0.1, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalServer:
    """An OpenAI-compatible server over one base and its adapters; ``start`` it, ``stop`` it."""

    def __init__(self, settings: ServeSettings, *,
                 on_event: Optional[Callable[[RequestLogged], None]] = None) -> None:
        settings.check()
        self.settings = settings
        self.on_event = on_event
        self._session = None
        self._scheduler = None
        self._served = None
        self._uvicorn = None
        self._thread: Optional[threading.Thread] = None
        self._stats = StatsRecorder()
        self._port: Optional[int] = None
        self._lock = threading.Lock()  # start and stop from different threads never interleave

    # life --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model and every adapter, bind the port and serve on background threads;
        ``StudioError`` (nothing left running) when the port is taken or an adapter is refused."""
        with self._lock:
            if self._thread is not None:
                return
            sock = _bind(self.settings.host, self.settings.port)
            try:
                self._load()
                self._serve(sock)
            except BaseException:
                sock.close()
                self._release()
                raise

    def stop(self) -> None:
        """Stop accepting, end the generations in progress, and free the model; idempotent."""
        with self._lock:
            if self._uvicorn is not None:
                self._uvicorn.should_exit = True
            if self._scheduler is not None:
                self._scheduler.close()
            if self._thread is not None:
                self._thread.join()
            self._release()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        """The base URL clients are given (``.../v1``); on 0.0.0.0 and :: it names this machine's loopback."""
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port or self.settings.port}/v1"

    @property
    def session(self):  # -> Optional[ChatSession]
        """The chat session the server answers with (None until started): whether a training run
        fits beside it is ``engine.chat.room.room_for_training``'s to say."""
        return self._session

    @property
    def model_names(self) -> list[str]:
        return self._served.names if self._served is not None else []

    def stats(self) -> ServeStats:
        scheduler = self._scheduler
        return self._stats.snapshot(scheduler.queued if scheduler else 0, scheduler.running if scheduler else 0)

    # parts -------------------------------------------------------------------------------------
    def _load(self) -> None:
        from engine.chat.session import ChatSession
        from engine.serve.scheduler import Scheduler
        from engine.serve.served import ServedModels

        settings = self.settings
        # Room for every served adapter at once: a batch mixes them, and none is ever evicted.
        session = ChatSession(settings.model, device=settings.device, threads=settings.threads,
                              max_cached_adapters=max(2, len(settings.adapters)))
        self._session = session
        session.load()
        self._served = ServedModels(session, settings.model, settings.adapters)
        served = [ref for ref in self._served.refs.values() if ref is not None]
        mixes = {ref: session.shares_batches({ref, None}) for ref in served}
        self._scheduler = Scheduler(session, max_queue=settings.max_queue, max_batch=settings.max_batch,
                                    mixes=mixes, on_batch=self._stats.record_batch)

    def _serve(self, sock: socket.socket) -> None:
        import uvicorn

        from engine.serve.app import ServeState, build_app

        state = ServeState(served=self._served, scheduler=self._scheduler, api_key=self.settings.api_key,
                           stats=self._stats, on_event=self.on_event)
        config = uvicorn.Config(build_app(state), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        self._port = sock.getsockname()[1]
        self._scheduler.start()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve-http", daemon=True)
        thread.start()
        self._uvicorn, self._thread = server, thread
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            server.should_exit = True
            thread.join()
            raise StudioError("the server did not start: see the log for uvicorn's reason")

    def _release(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = self._scheduler = self._served = self._uvicorn = self._thread = None


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one line on why not (uvicorn would exit the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise StudioError(f"port {port} on {host} is in use: stop what uses it or pick another --port") from None
        raise StudioError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
