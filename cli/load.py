"""`promote load`: paced GET requests to a loopback URL, summarised (Ctrl-C ends early)."""

import asyncio
import signal
from urllib.parse import urlsplit

from cli.errors import CliError


def run_load(url: str, rate: float, duration: float | None, count: int | None, path: str | None, concurrency: int):
    """Run the load with a progress line; its report, or CliError for a URL that is not loopback."""
    from cli import render
    from shared.loadgen import generate

    seconds = 10.0 if duration is None and count is None else duration

    async def run():
        stop = asyncio.Event()  # Ctrl-C: stop sending, let what is in flight finish, report
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        with render.console.status(f"load: {rate:g} requests/s to {url}") as shown:
            return await generate(url, rate=rate, duration=seconds, count=count, concurrency=concurrency,
                                  path=path or urlsplit(url).path or "/", stop=stop,
                                  on_progress=lambda done, failed: shown.update(f"load: {done} done, {failed} failed"))

    try:
        return asyncio.run(run())
    except ValueError as error:
        raise CliError(str(error)) from None
