"""Acknowledgements coalesced per consumed queue.

Deliveries finished in the same turn of the event loop are acked together: the run of finished
deliveries at the head of the window (in delivery order) with one ``basic.ack multiple=True``,
any finished one behind a delivery still being processed on its own, at once. Nothing waits for
a slow message at the head, so the prefetch window keeps refilling, and a delivery is never
covered by a ``multiple`` ack before it was processed or settled on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger(__name__)

_PENDING = 1  # processed, its ack not sent yet
_SETTLED = 2  # acked, nacked or given up on individually: a multiple ack may pass over it
_SENDING = 3  # its own ack is on the way: blocks the head until sent


class AckWindow:
    """Unsettled deliveries of one channel, in delivery order."""

    def __init__(self, settle: Callable[[Awaitable[None]], Awaitable[bool]]) -> None:
        self._settle = settle
        self._order: deque[AbstractIncomingMessage] = deque()
        self._state: dict[int, int] = {}
        self._pending: list[AbstractIncomingMessage] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.acks_sent = 0

    def __len__(self) -> int:
        return len(self._order)

    def received(self, message: AbstractIncomingMessage) -> None:
        """Call first thing for each delivery, so the window keeps delivery order."""
        self._order.append(message)

    def ack_soon(self, message: AbstractIncomingMessage) -> None:
        """The message was processed: ack it at the end of this loop turn."""
        self._state[id(message)] = _PENDING
        self._pending.append(message)
        self._schedule()

    def settled(self, message: AbstractIncomingMessage) -> None:
        """The message was settled on its own (or left to the broker): stop tracking it."""
        if id(message) not in self._state:
            self._state[id(message)] = _SETTLED
            if self._order and self._order[0] is message:
                self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        self._scheduled = False
        order, state = self._order, self._state
        last: AbstractIncomingMessage | None = None
        covered = 0
        while order and state.get(id(order[0])) in (_PENDING, _SETTLED):
            message = order.popleft()
            if state.pop(id(message)) == _PENDING:
                last = message
                covered += 1
        singles = [m for m in self._pending if state.get(id(m)) == _PENDING]
        self._pending = []
        for message in singles:
            state[id(message)] = _SENDING
        if last is not None:
            await self._settle(last.ack(multiple=covered > 1))
            self.acks_sent += 1
        for message in singles:
            await self._settle(message.ack())
            self.acks_sent += 1
            state[id(message)] = _SETTLED
        if singles and order and state.get(id(order[0])) in (_PENDING, _SETTLED):
            self._schedule()

    async def flush(self) -> None:
        """Send every ack due now (on drain, before the channel closes)."""
        self._schedule()
        while self._tasks:
            await asyncio.gather(*self._tasks)
