"""The tracker's session with ComfyUI: connect with the tracker's client id, find or submit the
prompt, receive its messages, and reconnect and reconcile when the socket drops or goes quiet,
because ComfyUI does not replay what was sent in between."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from django.conf import settings

from comfyui import ComfySocket, ComfyUIClient, ComfyUIError, PreviewFrame, UndecodedFrame, WsMessage
from jobs import instruments
from jobs.failures import Failure, failure_from_rejection, failure_from_vanished_prompt
from jobs.models import FailureCategory, Job
from jobs.prompt_location import prompt_locate
from jobs.tracking.coalescer import BROADCAST_QUIET_SECONDS, Coalescer
from jobs.tracking.ending import JobEnding

logger = logging.getLogger(__name__)

# With no message for this long, ask /queue whether the prompt is still there (sooner just after
# a reconnect, when ComfyUI may have unregistered our new socket: see ComfySession.reconcile).
IDLE_RECONCILE_SECONDS = 10.0
IDLE_AFTER_RECONNECT_SECONDS = 2.0
# Sleeping through a sampler's steps (see ComfySession.receive) only for at least this long, and
# waking this much before a write or broadcast is due, so the step that goes out is a fresh one.
DOZE_MIN_SECONDS = 0.02
DOZE_EARLY_SECONDS = 0.002


class ComfySession:
    def __init__(
        self,
        job: Job,
        client: ComfyUIClient,
        *,
        client_id: str,
        prompt_id: str,
        coalescer: Coalescer,
        ending: JobEnding,
    ) -> None:
        self.job = job
        self.client = client
        self.client_id = client_id
        self.prompt_id = prompt_id
        self.coalescer = coalescer
        self.ending = ending
        self.socket: ComfySocket | None = None
        self.reconnected_at: float | None = None
        self.last_message = time.monotonic()
        self.message_gap = 1.0  # smoothed seconds between ComfyUI messages
        self._messages_closed = 0  # received by sockets closed since
        # Progress received and not decoded yet (see receive), and messages decoded and not handed out.
        self.held: dict[str, UndecodedFrame] = {}  # by type, in the order the latest of each came
        self.ready: deque[WsMessage | PreviewFrame] = deque()
        # A sampler's latest step seen (node, value, max, when) and how fast its value grew: see _doze_until.
        self.step_seen: tuple[str, float, float, float] | None = None
        self.step_rate: float | None = None
        self._step_frame: UndecodedFrame | None = None  # the held progress that step_seen is from

    # --- connecting and submitting -------------------------------------------------------------

    def connect(self) -> None:
        self.socket = self._connect_until_deadline()

    def locate_until_deadline(self) -> str | None:
        """Where ComfyUI has our prompt (see prompt_locate), retrying while it is unreachable."""
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        while True:
            try:
                return prompt_locate(self.client, self.prompt_id)
            except ComfyUIError as exc:
                if not exc.retryable or time.monotonic() > deadline:
                    self.ending.fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: %s; retrying", self.job.id, exc)
                self.coalescer.beat_if_due()
                time.sleep(1.0)

    def submit(self, prompt: dict[str, Any]) -> None:
        """Submit `prompt` (the job's workflow, with its input files' names in ComfyUI: tracking.inputs)."""
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        while True:
            try:
                self.client.submit(prompt, prompt_id=self.prompt_id, client_id=self.client_id)
                break
            except ComfyUIError as exc:
                if not exc.retryable:
                    self.ending.fail(failure_from_rejection(exc.body, str(exc)))
                if time.monotonic() > deadline:
                    self.ending.fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: submit failed: %s; retrying", self.job.id, exc)
            # The answer may have been lost after ComfyUI accepted the prompt: look before resending.
            time.sleep(1.0)
            self.coalescer.beat_if_due()
            if self.locate_until_deadline() is not None:
                break
        logger.info("job %s submitted to %s as prompt %s", self.job.id, self.client.base_url, self.prompt_id)

    def _connect_until_deadline(self) -> ComfySocket:
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        delay = 0.5
        while True:
            try:
                return self.client.connect(self.client_id)
            except ComfyUIError as exc:
                if time.monotonic() + delay > deadline:
                    self.ending.fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: %s; retrying in %.1fs", self.job.id, exc, delay)
                self.coalescer.beat_if_due()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- receiving ---------------------------------------------------------------------------

    def receive(self, timeout: float) -> WsMessage | PreviewFrame | None:
        """ComfyUI's next message, or None after `timeout`; raises ComfyUIError when the socket drops.

        `progress` and `progress_state` arrive about 200 times a second together, and each one
        supersedes the one before of its kind (the latest progress_state holds every node's state).
        They are held undecoded, only the latest of each kind, and decoded in the order they came
        when the coalescer would write or broadcast, when any other message arrives (so node starts
        and ends keep their order), or when ComfyUI goes quiet: what is never decoded is what
        nobody would have seen. A progress_state alone releases them only for a write, as a
        broadcast waits for the step's own `progress` (see JobTracker._follow).

        While a node's steps come faster than anything is due, the thread sleeps instead of waking
        for each one (see _doze_until) and then takes what came meanwhile in one read, where the
        socket skips the superseded frames by their length (comfyui.ws).
        """
        if self.ready:
            return self.ready.popleft()
        now = time.monotonic()
        deadline = now + timeout
        # The coalescer changes only between calls: when it will next write or broadcast is fixed here.
        broadcast_at, write_at = self.coalescer.due_at()
        # Held progress goes out when ComfyUI goes quiet, as a pending broadcast would.
        held_deadline = min(deadline, max(broadcast_at + BROADCAST_QUIET_SECONDS, now + 0.005))
        wake_at = min(broadcast_at, write_at, deadline) - DOZE_EARLY_SECONDS
        while True:
            if (until := self._doze_until(wake_at)) is not None:
                time.sleep(max(until - time.monotonic(), 0.0))  # a busy machine may have passed it
            frame = self._next_frame(held_deadline if self.held else deadline)
            now = self.last_message  # when `frame` came
            if isinstance(frame, UndecodedFrame):
                self._hold(frame)
                if now < write_at and (frame.type != "progress" or now < broadcast_at):
                    continue
                self._release()
            else:
                # A preview changes only the preview: held progress waits unless something is due.
                if self.held and (not isinstance(frame, PreviewFrame) or now >= min(broadcast_at, write_at)):
                    self._release()
                if frame is not None:
                    self.ready.append(frame)
                if isinstance(frame, WsMessage):
                    self.step_seen = self.step_rate = None  # a node may have ended: no more sleeping on its steps
            return self.ready.popleft() if self.ready else None

    def _next_frame(self, deadline: float) -> WsMessage | UndecodedFrame | PreviewFrame | None:
        if self.socket is None:
            raise ComfyUIError("websocket not connected", retryable=True)
        wait = deadline - time.monotonic()
        if wait <= 0:
            return None
        frame = self.socket.receive(wait)
        if frame is not None:
            now = time.monotonic()
            self.message_gap = 0.8 * self.message_gap + 0.2 * min(now - self.last_message, IDLE_RECONCILE_SECONDS)
            self.last_message = now
        return frame

    @property
    def messages(self) -> int:
        """ComfyUI's messages received, the ones skipped undecoded included."""
        return self._messages_closed + (self.socket.messages if self.socket is not None else 0)

    def _doze_until(self, wake_at: float) -> float | None:
        """When to look at the socket again, when sleeping till then is safe; None to wait on it.

        Progress would go out only at `wake_at` (a write or broadcast due), so steps that come
        before need not wake the thread, but a node's end must not wait: the sleep is at most half
        the time the node still needs, from its latest step and the rate its value grew since the
        step before. Never with messages waiting, before two steps of a node, or once it stalls.
        """
        if self.socket is None or self.socket.pending:
            return None
        now = time.monotonic()
        if wake_at - now < DOZE_MIN_SECONDS:
            return None
        held = self.held.get("progress")
        if held is not None and held is not self._step_frame:
            self._step_frame = held
            self._observe_step(held.steps(), self.last_message)
        if self.step_seen is None or self.step_rate is None:
            return None
        _, value, most, when = self.step_seen
        needs = (most - value) / self.step_rate - (now - when)
        until = min(wake_at, now + needs / 2)
        return until if until - now >= DOZE_MIN_SECONDS else None

    def _observe_step(self, step: tuple[str, float, float] | None, when: float) -> None:
        seen = self.step_seen
        self.step_seen = (*step, when) if step is not None else None
        if step is None or seen is None or seen[0] != step[0] or seen[2] != step[2]:
            self.step_rate = None
        elif step[1] > seen[1] and when > seen[3]:
            self.step_rate = (step[1] - seen[1]) / (when - seen[3])
        else:
            self.step_rate = None  # stalled, or gone back: wait on the socket

    def _hold(self, frame: UndecodedFrame) -> None:
        self.held.pop(frame.type, None)
        self.held[frame.type] = frame

    def _release(self) -> None:
        """Decode what is held, in the order it came, ahead of the frame that released it."""
        self.ready.extend(
            message for message in (frame.decode() for frame in self.held.values()) if message is not None
        )
        self.held = {}

    def reconnect(self) -> None:
        self.close()
        self.socket = self._connect_until_deadline()
        self.reconnected_at = time.monotonic()
        instruments.tracker_reconnected("dropped")
        self.reconcile()

    def reconcile_if_idle(self) -> None:
        if time.monotonic() - self.last_message > self._idle_limit():
            self.reconcile(silent=True)

    def reconcile(self, *, silent: bool = False) -> None:
        """Ask ComfyUI directly: after a dropped socket or a long silence, messages may be gone."""
        self.last_message = time.monotonic()
        try:
            where = prompt_locate(self.client, self.prompt_id)
        except ComfyUIError as exc:
            logger.warning("job %s: reconcile failed: %s", self.job.id, exc)
            return
        if where == "running" and silent:
            # ComfyUI keeps one socket per client id, and when it notices the death of an old
            # socket late it unregisters the new one with the same id: a running prompt whose
            # events stopped reaching us needs a fresh socket (which also hears the current node).
            logger.info("job %s: running in ComfyUI but silent here; reopening the socket", self.job.id)
            self.close()
            time.sleep(0.2)
            self.socket = self._connect_until_deadline()
            self.reconnected_at = time.monotonic()
            instruments.tracker_reconnected("silent")
        if where == "history":
            self.ending.finish()
        if where is None:
            self.ending.fail(failure_from_vanished_prompt(reached_comfyui=True))

    def close(self) -> None:
        if self.socket is not None:
            self._messages_closed += self.socket.messages
            self.socket.close()
            self.socket = None

    def _idle_limit(self) -> float:
        """How long a silence is normal: a sampler reporting every 10 ms going quiet for 2 s is
        suspect; one whose steps take a minute is not."""
        heard_since_reconnect = self.reconnected_at is not None and self.last_message > self.reconnected_at + 0.5
        if self.reconnected_at is not None and not heard_since_reconnect:
            return IDLE_AFTER_RECONNECT_SECONDS
        return min(IDLE_RECONCILE_SECONDS, max(IDLE_AFTER_RECONNECT_SECONDS, 20 * self.message_gap))
