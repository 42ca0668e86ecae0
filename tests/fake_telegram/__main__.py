"""Run the fake Telegram Bot API standalone: `python -m tests.fake_telegram --port 8081`.

The first line printed is the base URL for python-telegram-bot (http://127.0.0.1:8081/bot); any
`<digits>:<secret>` token works. Serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tests.fake_telegram.server import FakeTelegram


async def serve(host: str, port: int, record: str) -> None:
    fake = FakeTelegram(host, port, record=record)  # type: ignore[arg-type]
    await fake.start_async()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(fake.base_url, flush=True)
    print(f"control API: {fake.control_url}/ (record={record}); Ctrl-C to stop", flush=True)
    await stop.wait()
    await fake.stop_async()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_telegram", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port (printed)")
    parser.add_argument(
        "--record",
        choices=("full", "counts"),
        default="full",
        help="full: keep every call for /_fake/calls; counts: only counters (benchmarks)",
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.record))


if __name__ == "__main__":
    main()
