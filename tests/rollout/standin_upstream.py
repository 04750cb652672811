"""A tiny SSE upstream standing in for one arm in router tests: `python standin_upstream.py PORT ARM`.

`POST /v1/chat/completions` streams `chunks` SSE events `delay_ms` apart (both from the JSON body) and
names the arm in each event; `/ready` answers 200.
"""

import asyncio
import json
import sys

from aiohttp import web


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(int(body.get("chunks", 3))):
        await asyncio.sleep(float(body.get("delay_ms", 0)) / 1000)
        event = {"arm": request.app["arm"], "i": i, "echo": body.get("echo")}
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def ready(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def main() -> None:
    port, arm = int(sys.argv[1]), sys.argv[2]
    app = web.Application()
    app["arm"] = arm
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
