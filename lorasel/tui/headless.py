"""Driving the TUI headless (Textual's pilot): what the tests and the screenshot script share."""

from __future__ import annotations

import asyncio


async def settle(pilot, rounds: int = 200, tick: float = 0.01) -> None:
    """Wait until no worker runs and the message queues are empty, twice in a row: a worker's
    result may start another (the ranking, then the images), so one wait is not enough."""
    quiet = 0
    for _ in range(rounds):
        await pilot.pause()
        if any(w.is_running for w in pilot.app.workers):
            quiet = 0
            await asyncio.sleep(tick)
            continue
        quiet += 1
        if quiet >= 2:
            return
    raise TimeoutError(f"the TUI did not settle in {rounds} rounds")
