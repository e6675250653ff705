"""One web process's fan-out of job states to its websockets.

Channels gives each socket a channel of its own in every group it joins: the layer then hands each
message to every socket's channel, each socket decodes it (msgpack) and wakes its consumer through a
queue, a new task and an `asyncio.wait`, per message per socket. That machinery, not the sending, was
most of a relay's CPU (devtools/benchmarks/fanout.py). Here each group has one channel per process,
the hub's: a message is received and decoded once per process, then handed to the group's sockets
in this process by a plain call that appends it to the socket's mailbox; each socket's own sender
task sends what its mailbox holds, so a slow client delays nobody else.

A socket's mailbox is held until its snapshot is sent (`release`): it joins its groups before
reading the snapshot, so nothing falls between the two, and what arrives meanwhile waits and is then
filtered by version. Delivered at once instead, a state that came while the snapshot was being read
met a socket with no state yet and was dropped; when that was the job's last, the viewer never saw
it end (tests/integration/test_fleet_faults.py, a web restart under 500 subscribers, failed so).

A socket that falls MAILBOX_LIMIT messages behind (a client that stopped reading) is closed with
CLOSE_TOO_SLOW: its client reconnects and catches up from the database, as after any drop.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

MAILBOX_LIMIT = 256
# While held (its snapshot being read: seconds at most, longer in a connect storm), a mailbox keeps up
# to this many: references to messages every socket shares, 8 bytes each; a staff socket's 10 s at
# 833 states a second. Once released, what was held is sent before the usual limit applies again.
MAILBOX_HELD_LIMIT = 8192
CLOSE_TOO_SLOW = 4408


class Mailbox:
    """A socket's messages waiting to be sent, sent in order.

    A message is sent at once, by the call that puts it, when nothing waits before it: the socket's
    send then nearly always completes without waiting (its buffer has room), so the message costs no
    task switch. A task is made only when a send has to wait (a client slow to read); it finishes that
    send, then what came meanwhile. Before, each socket had a task woken by an event for every
    message: 4.5 µs of the event loop's time per message per socket, of ~33 (2,000 mailboxes,
    uvloop, a probe on 2026-12-08), in a fan-out of 20,000 messages a second."""

    def __init__(
        self,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        overflow: Callable[[], Awaitable[None]],
        *,
        held: bool = False,
    ):
        self._handle = handle
        self._overflow = overflow
        self._messages: deque[dict[str, Any]] = deque()
        self._held = held  # what is put is sent only once released
        self._limit = MAILBOX_HELD_LIMIT if held else MAILBOX_LIMIT
        self._overflowed = False
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None  # only while a send waits

    def put(self, message: dict[str, Any]) -> None:
        if self._overflowed or self._closed:
            return
        if len(self._messages) >= self._limit:
            # Its sender may be stuck in a send that never completes: stopped, then the socket closed.
            self._overflowed = True
            self._messages.clear()
            if self._sender is not None:
                self._sender.cancel()
            self._closing = asyncio.ensure_future(self._overflow())
            return
        self._messages.append(message)
        if self._sender is None and not self._held:
            self._send_now()

    def release(self) -> None:
        """Start sending (a held mailbox): what waited first, in order."""
        self._limit = max(MAILBOX_LIMIT, len(self._messages) + MAILBOX_LIMIT)
        self._held = False
        if self._sender is None and not self._closed:
            self._send_now()

    def _send_now(self) -> None:
        """Sends what waits, here, for as long as each send completes without waiting; the first
        that waits is handed to a task, which sends the rest after it."""
        while self._messages:
            if len(self._messages) < MAILBOX_LIMIT:
                self._limit = MAILBOX_LIMIT  # what was held is out
            sending = self._handle(self._messages.popleft())
            try:
                waits_for = sending.send(None)  # type: ignore[attr-defined]
            except StopIteration:
                continue
            except (Exception, asyncio.CancelledError):
                logger.exception("a websocket's update could not be sent")
                continue
            self._sender = asyncio.ensure_future(self._send_later(sending, waits_for))
            return

    async def _send_later(self, sending: Any, waits_for: Any) -> None:
        try:
            await _Resumed(sending, waits_for)
        except asyncio.CancelledError:
            sending.close()
            raise
        except Exception:
            logger.exception("a websocket's update could not be sent")
        self._sender = None
        self._send_now()  # what came meanwhile (put appends while a send waits)

    def close(self) -> None:
        self._closed = True
        self._messages.clear()
        if self._sender is not None:
            self._sender.cancel()


class _Resumed:
    """Awaits the rest of a coroutine that was started by hand and stopped at its first wait
    (`waits_for`, what it yielded): the task awaiting this waits for that first, then goes on
    driving the coroutine as if it had started it."""

    def __init__(self, coroutine: Any, waits_for: Any) -> None:
        self.coroutine = coroutine
        self.waits_for = waits_for

    def __await__(self) -> Generator[Any, Any, None]:
        waits_for = self.waits_for
        while True:
            try:
                sent = yield waits_for
            except BaseException as exc:  # the task's cancel, thrown in where the coroutine waits
                try:
                    waits_for = self.coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waits_for = self.coroutine.send(sent)
                except StopIteration:
                    return


@dataclass
class _Subscription:
    group: str
    members: set[Mailbox] = field(default_factory=set)
    channel: str = ""
    ready: asyncio.Future[None] | None = None
    reader: asyncio.Task[None] | None = None


class Hub:
    """The groups this process's sockets follow, each subscribed once (see the module's doc)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.subscriptions: dict[str, _Subscription] = {}

    async def join(self, group: str, mailbox: Mailbox) -> None:
        """Returns once the group's messages reach the mailbox (join before reading a snapshot)."""
        subscription = self.subscriptions.get(group)
        if subscription is None:
            subscription = self.subscriptions[group] = _Subscription(group)
            subscription.ready = asyncio.ensure_future(self._open(subscription))
        subscription.members.add(mailbox)
        assert subscription.ready is not None
        try:
            await asyncio.shield(subscription.ready)
        except BaseException:
            await self.leave(group, mailbox)
            raise

    async def leave(self, group: str, mailbox: Mailbox) -> None:
        subscription = self.subscriptions.get(group)
        if subscription is None or mailbox not in subscription.members:
            return
        subscription.members.discard(mailbox)
        if subscription.members:
            return
        del self.subscriptions[group]  # a join from here on opens a new subscription
        await self._close(subscription)

    async def _open(self, subscription: _Subscription) -> None:
        subscription.channel = await self.layer.new_channel("hub.")
        await self.layer.group_add(subscription.group, subscription.channel)
        subscription.reader = asyncio.ensure_future(self._read(subscription))

    async def _close(self, subscription: _Subscription) -> None:
        assert subscription.ready is not None
        try:
            await subscription.ready
        except Exception:
            return  # never opened: nothing to close
        if subscription.reader is not None:
            subscription.reader.cancel()  # the layer unsubscribes its channel when its receive is cancelled
        try:
            await self.layer.group_discard(subscription.group, subscription.channel)
        except Exception:
            logger.warning("leaving group %s failed", subscription.group, exc_info=True)

    async def _read(self, subscription: _Subscription) -> None:
        while True:
            try:
                message = await self.layer.receive(subscription.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("group %s: receiving failed; trying again", subscription.group, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for mailbox in list(subscription.members):
                mailbox.put(message)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def process_hub() -> Hub:
    """This event loop's hub (one per process under a web server; tests run several loops)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
