"""The tracker's session with ComfyUI: connect with the tracker's client id, find or submit the
prompt, receive its messages, and reconnect and reconcile when the socket drops or goes quiet,
because ComfyUI does not replay what was sent in between."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from comfyui import ComfySocket, ComfyUIClient, ComfyUIError, PreviewFrame, WsMessage
from jobs.failures import Failure, failure_from_rejection, failure_from_vanished_prompt
from jobs.models import FailureCategory, Job
from jobs.prompt_location import prompt_locate
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.ending import JobEnding

logger = logging.getLogger(__name__)

# With no message for this long, ask /queue whether the prompt is still there (sooner just after
# a reconnect, when ComfyUI may have unregistered our new socket: see ComfySession.reconcile).
IDLE_RECONCILE_SECONDS = 10.0
IDLE_AFTER_RECONNECT_SECONDS = 2.0


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
        self.messages = 0

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
        """ComfyUI's next message, or None after `timeout`; raises ComfyUIError when the socket drops."""
        if self.socket is None:
            raise ComfyUIError("websocket not connected", retryable=True)
        message = self.socket.receive(timeout)
        if message is not None:
            now = time.monotonic()
            self.messages += 1
            self.message_gap = 0.8 * self.message_gap + 0.2 * min(now - self.last_message, IDLE_RECONCILE_SECONDS)
            self.last_message = now
        return message

    def reconnect(self) -> None:
        self.close()
        self.socket = self._connect_until_deadline()
        self.reconnected_at = time.monotonic()
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
        if where == "history":
            self.ending.finish()
        if where is None:
            self.ending.fail(failure_from_vanished_prompt(reached_comfyui=True))

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def _idle_limit(self) -> float:
        """How long a silence is normal: a sampler reporting every 10 ms going quiet for 2 s is
        suspect; one whose steps take a minute is not."""
        heard_since_reconnect = self.reconnected_at is not None and self.last_message > self.reconnected_at + 0.5
        if self.reconnected_at is not None and not heard_since_reconnect:
            return IDLE_AFTER_RECONNECT_SECONDS
        return min(IDLE_RECONCILE_SECONDS, max(IDLE_AFTER_RECONNECT_SECONDS, 20 * self.message_gap))
