"""The proxy in front of a disaggregated vLLM deployment: each completion is prefilled by a prefill
instance, then decoded by a decode instance that pulls the prompt's KV cache from it.

    python -m emulator.engines.vllm.pd_proxy --port P --prefill URL [URL ...] --decode URL [URL ...]

It follows the protocol of vLLM's own P/D proxies (examples/disaggregated/, NixlConnector's
toy proxy): the prefill instance gets the request with max_tokens 1, no streaming and
kv_transfer_params {"do_remote_decode": true}; its answer's kv_transfer_params (where its blocks
are) go with the original request to the decode instance, whose stream is the client's. Each role
sends to its instance with the fewest requests in flight, ties in turn. GET /health answers once every instance
does. Written here, not taken from vLLM: the proxies vLLM ships are examples outside its package.
"""
from __future__ import annotations

import argparse
import time

import aiohttp
from aiohttp import web

# A completion may wait behind a long queue at overload; the load generator bounds the run.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)


class Pool:
    """Instances of one role, each with its requests in flight: the least busy is picked, ties in
    turn (so a light load still spreads over every instance)."""

    def __init__(self, urls: list[str]) -> None:
        self.in_flight = {url: 0 for url in urls}
        self.urls, self.turn = list(urls), 0

    def pick(self) -> str:
        order = self.urls[self.turn:] + self.urls[:self.turn]
        url = min(order, key=self.in_flight.get)
        self.turn = (self.urls.index(url) + 1) % len(self.urls)
        self.in_flight[url] += 1
        return url

    def done(self, url: str) -> None:
        self.in_flight[url] -= 1


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    app = request.app
    prefill_body = {**body, "max_tokens": 1, "stream": False, "kv_transfer_params": {"do_remote_decode": True}}
    for key in ("stream_options", "min_tokens"):
        prefill_body.pop(key, None)
    started = time.monotonic()
    prefill = app["prefill"].pick()
    try:
        async with app["session"].post(prefill + "/v1/completions", json=prefill_body) as answer:
            if answer.status != 200:
                return web.Response(status=answer.status, body=await answer.read(), content_type="application/json")
            params = (await answer.json()).get("kv_transfer_params")
    finally:
        app["prefill"].done(prefill)
    prefilled = time.monotonic()
    decode = app["decode"].pick()
    try:
        async with app["session"].post(decode + "/v1/completions", json={**body, "kv_transfer_params": params}) as answer:
            response = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
            await response.prepare(request)
            first = None
            async for chunk in answer.content.iter_any():
                if first is None:
                    first = time.monotonic()
                    # Where a first token's time went: the prefill answer, then the decode's first chunk.
                    print(f"request: prefill {1e3 * (prefilled - started):.1f} ms on {prefill}, first decode chunk "
                          f"{1e3 * (first - prefilled):.1f} ms later on {decode}", flush=True)
                await response.write(chunk)
            await response.write_eof()
            return response
    finally:
        app["decode"].done(decode)


async def health(request: web.Request) -> web.Response:
    app = request.app
    for url in [*app["prefill"].in_flight, *app["decode"].in_flight]:
        try:
            async with app["session"].get(url + "/health") as answer:
                if answer.status != 200:
                    return web.Response(status=503, text=f"{url} is not ready")
        except aiohttp.ClientError:
            return web.Response(status=503, text=f"{url} is not up")
    return web.Response(text="ok")


def build_app(prefill: list[str], decode: list[str]) -> web.Application:
    app = web.Application()
    app["prefill"], app["decode"] = Pool(prefill), Pool(decode)

    async def session(app: web.Application):
        app["session"] = aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator.engines.vllm.pd_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefill", nargs="+", required=True, help="the prefill instances' base URLs")
    parser.add_argument("--decode", nargs="+", required=True, help="the decode instances' base URLs")
    args = parser.parse_args()
    web.run_app(build_app(args.prefill, args.decode), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
