"""Fan-out to many readers, conflated per key: the one mechanism behind every live feed.

Publishing is synchronous and never waits for a reader. Each reader has a mailbox that holds at
most one item per key (the newest), so a reader that falls behind costs bounded memory and never
slows the publisher or the other readers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Mailbox(Generic[K, V]):
    """One reader's pending items: the newest per key, in the order they last changed."""

    def __init__(self, accepts: Callable[[V], bool] | None = None) -> None:
        self.accepts = accepts
        self._pending: dict[K, V] = {}
        self._ready = asyncio.Event()
        self.offered = 0
        self.conflated = 0

    def offer(self, key: K, item: V) -> None:
        self.offered += 1
        if self._pending.pop(key, None) is not None:
            self.conflated += 1
        self._pending[key] = item
        self._ready.set()

    def take(self) -> list[V]:
        """Everything pending, oldest change first; the mailbox is empty afterwards."""
        pending, self._pending = self._pending, {}
        self._ready.clear()
        return list(pending.values())

    async def wait(self, timeout_s: float) -> bool:
        """Wait until something is pending; False on timeout."""
        if self._pending:
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def backlog(self) -> int:
        return len(self._pending)


class FanOut(Generic[K, V]):
    """Offers each published item to every mailbox whose filter accepts it."""

    def __init__(self) -> None:
        self._mailboxes: set[Mailbox[K, V]] = set()

    def subscribe(self, accepts: Callable[[V], bool] | None = None) -> Mailbox[K, V]:
        mailbox: Mailbox[K, V] = Mailbox(accepts)
        self._mailboxes.add(mailbox)
        return mailbox

    def unsubscribe(self, mailbox: Mailbox[K, V]) -> None:
        self._mailboxes.discard(mailbox)

    def publish(self, key: K, item: V) -> None:
        for mailbox in self._mailboxes:
            if mailbox.accepts is None or mailbox.accepts(item):
                mailbox.offer(key, item)

    @property
    def readers(self) -> int:
        return len(self._mailboxes)
