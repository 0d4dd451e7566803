"""Running the app under uvicorn: `run_server` for `internvl serve`, `BackgroundServer` (a thread on a
free loopback port) for tests and benchmarks."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from types import TracebackType
from typing import Any

from internvl.chat import Chat
from internvl.serve.app import create_app
from internvl.serve.engine import Engine, EngineSettings
from internvl.serve.settings import ServeSettings

log = logging.getLogger("internvl.serve")


def run_server(
    chat: Chat, settings: ServeSettings, engine_settings: EngineSettings | None = None, reward_model: Any = None
) -> None:
    """Serve `chat` until interrupted; `reward_model` enables the `best_of` extension."""
    import uvicorn

    settings.check()
    if not _is_loopback(settings.host) and settings.api_key is None:
        log.warning(
            "listening on %s without an API key: anyone who can reach this port can use the model "
            "(pass --api-key or set INTERNVL_API_KEY)",
            settings.host,
        )
    app = create_app(Engine(chat, engine_settings), settings, reward_model)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),  # Ctrl-C: running answers get this long
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BackgroundServer:
    """`with BackgroundServer(chat, settings) as server: ... server.url ...` serves on 127.0.0.1 at a
    free port in a daemon thread; leaving the block shuts it down (and the engine with it)."""

    def __init__(
        self,
        chat: Chat,
        settings: ServeSettings | None = None,
        engine_settings: EngineSettings | None = None,
        engine: Engine | None = None,
        reward_model: Any = None,
    ) -> None:
        import uvicorn

        self.engine = engine or Engine(chat, engine_settings)
        self.settings = settings or ServeSettings()
        app = create_app(self.engine, self.settings, reward_model)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="internvl-http", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
