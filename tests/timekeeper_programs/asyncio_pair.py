"""Two processes on one virtual clock (tests/test_timekeeper_time.py).

    asyncio_pair.py server [uvloop]       prints its port, answers one line with its monotonic
    asyncio_pair.py client PORT [uvloop]  sleeps 30 s, sends its monotonic, prints JSON
"""
import asyncio
import json
import sys
import time


async def server() -> None:
    done = asyncio.Event()

    async def handle(reader, writer):
        line = await reader.readline()
        now = time.monotonic()
        writer.write(f"{now!r}\n".encode())
        await writer.drain()
        writer.close()
        print(json.dumps({"client_sent": float(line), "received": now}), flush=True)
        done.set()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    srv.close()
    await srv.wait_closed()


async def client(port: int) -> None:
    loop = asyncio.get_running_loop()
    m0, l0 = time.monotonic(), loop.time()
    await asyncio.sleep(30)
    m1, l1 = time.monotonic(), loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = time.monotonic()
    writer.write(f"{sent!r}\n".encode())
    await writer.drain()
    answer = float(await reader.readline())
    writer.close()
    print(json.dumps({"slept": m1 - m0, "loop_slept": l1 - l0, "sent": sent, "server": answer,
                      "loop": type(loop).__module__}), flush=True)


def main() -> None:
    role, rest = sys.argv[1], sys.argv[2:]
    if "uvloop" in rest:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(server() if role == "server" else client(int(rest[0])))


if __name__ == "__main__":
    main()
