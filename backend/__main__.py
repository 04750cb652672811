"""`python -m backend`: start the embedded SGLang-compatible VLM server; SIGTERM drains and exits 0."""

from __future__ import annotations

import signal

_early_stop: list[int] = []
if __name__ == "__main__":
    # Importing torch takes seconds: a SIGTERM in that time means "stop", not "die with 143".
    signal.signal(signal.SIGTERM, lambda signum, frame: _early_stop.append(signum))

import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from aiohttp import web  # noqa: E402

from backend.config import ServerConfig, parse_config  # noqa: E402
from backend.http_server import BackendServer  # noqa: E402

log = logging.getLogger("backend")

STARTUP_TIMEOUT_S = 300.0


async def serve(cfg: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT (drain, exit 0) or a failed rank (exit 1)."""
    server = BackendServer(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if _early_stop:
        stop.set()
    runner = web.AppRunner(
        server.app, access_log=None, handle_signals=False, keepalive_timeout=cfg.keep_alive_s
    )
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()  # bind first: a taken port fails before any rank is spawned
    await server.engine.start()
    log.info("serving %s on http://%s:%d (tp=%d, mm-input-mode=%s)", cfg.served_model_name, cfg.host, cfg.port,
             cfg.tp_size, cfg.mm_input_mode)  # fmt: skip

    async def startup_deadline() -> None:
        try:
            await asyncio.wait_for(server.engine.ready.wait(), STARTUP_TIMEOUT_S)
        except TimeoutError:
            server.engine.failure = f"scheduler ranks not ready after {STARTUP_TIMEOUT_S:.0f}s"
            server.engine.failed.set()

    deadline_task = asyncio.create_task(startup_deadline())
    waiters = {
        asyncio.create_task(stop.wait()): "signal",  # honoured while starting, too
        asyncio.create_task(server.engine.failed.wait()): "failed",
    }
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    deadline_task.cancel()
    reason = waiters[done.pop()]
    for task in waiters:
        task.cancel()
    code = 0
    if reason == "failed":
        log.error("exiting: %s", server.engine.failure)
        code = 1
        server.engine.kill_ranks()
    else:
        # Graceful: not ready from now on, let in-flight requests finish, then stop the ranks.
        server.draining = True
        log.info("draining %d in-flight request(s)", server.in_flight)
        deadline = loop.time() + cfg.drain_timeout_s
        while server.in_flight > 0 and loop.time() < deadline and not server.engine.failed.is_set():
            await asyncio.sleep(0.05)
        if server.in_flight > 0:
            log.warning("drain timeout: %d request(s) still in flight", server.in_flight)
            code = 1
        if server.engine.failed.is_set():
            code = 1
    await site.stop()
    log.info("stopping scheduler ranks")
    await server.engine.shutdown()
    log.info("ranks stopped")
    await runner.cleanup()
    log.info("stopped (exit %d)", code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [front] %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(cfg))


if __name__ == "__main__":
    sys.exit(main())
