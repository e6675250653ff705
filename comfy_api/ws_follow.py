"""One front-door websocket's prompts: which of the user's jobs its clientId hears of, and what the
database and storage must be asked for their ComfyUI messages (comfy_api.ws_messages translates).

Sync code: the consumer (comfy_api.consumers) calls `ClientStream.update` through a thread only when
an update needs the database (a gap in the events, the end of a prompt, a new preview); an update
whose events follow on from the last one told is translated on the event loop (`ClientStream.fast`).

Broadcasts are at-most-once and coalesced (jobs.tracking.coalescer: at most ~8 a second per job), so
what happened is read from the timeline: the events after the last seq told, in order, bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from django.core.files.storage import default_storage

from comfy_api import selectors
from comfy_api.outputs import node_outputs
from comfy_api.ws_messages import FINAL, RUNNING, Message, PromptMessages, preview_frame, status_message
from jobs import selectors as job_selectors
from jobs import services
from jobs.live_state import live_event_payloads
from jobs.models import EventKind, Job, JobEvent, JobOutput

# Events read from the timeline at once (as jobs.consumers reads a reconnecting socket's backlog): about
# 2.7 hours of a sampler's 2-second step samples; a prompt further behind catches up over the next updates.
BACKLOG_LIMIT = 5000
# Running prompts told to a socket when it connects (ComfyUI runs one at a time; the fleet, several).
RESUME_LIMIT = 50
# Jobs of the user's that are not this client's, remembered so their updates cost no query.
IGNORED_MAX = 2000
# Prompts one socket follows at once: past it, new prompts are told only through `status`.
FOLLOWED_MAX = 500
PREVIEW_MAX_BYTES = 8 << 20
PREVIEW_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}

Frame = Message | bytes


class ClientStream:
    """What one socket with one clientId has told of the user's prompts."""

    def __init__(self, user: Any, client_id: str) -> None:
        self.user = user
        self.client_id = client_id
        self.preview_metadata = False  # set by the client's `feature_flags`
        self.prompts: dict[str, PromptMessages] = {}  # by job id
        self.preview_urls: dict[str, str] = {}  # job id -> the latest preview_url seen
        # job id -> the node whose preview is not told yet: the live state (and its preview) runs ahead of
        # the timeline by up to a database write, and a preview goes after its node's `executing`.
        self.previews_due: dict[str, str] = {}
        self.ignored: OrderedDict[str, None] = OrderedDict()
        self.queue_remaining: int | None = None
        # ComfyUI runs one prompt at a time and its clients expect it; the fleet runs several of a client's
        # at once. One is told at a time, from its execution_start to its end; the news of the others waits
        # (only their place: what happened stays in the timeline) and is told, from the timeline, after.
        self.telling: str | None = None
        self.held: dict[str, None] = {}  # job ids, in the order their news came
        self.releasing = False

    # --- the database side (a thread) -------------------------------------------------------------

    def opening(self) -> list[Frame]:
        """`status` first (with the clientId, as ComfyUI), then each running prompt's state so far."""
        self.queue_remaining = selectors.queue_remaining(self.user)
        frames: list[Frame] = [status_message(self.queue_remaining, sid=self.client_id)]
        unfinished = (
            selectors.client_prompts(self.user, self.client_id)
            .exclude(job__status__in=list(FINAL))
            .order_by("number", "id")[:RESUME_LIMIT]
        )
        for front in unfinished:
            job = front.job
            translation = PromptMessages(prompt_id=front.prompt_id)
            self.prompts[str(job.pk)] = translation
            if self.telling is not None:
                self.held[str(job.pk)] = None  # told from the timeline once the one being told ends
                continue
            state = job_selectors.job_state(job)
            frames += translation.resume(state, finished_nodes(job))
            self._note_preview(str(job.pk), state)
            frames = self._place_preview(job, translation, frames)
            self._mind_telling(str(job.pk), translation)
        return frames

    def learn(self, job_id: str) -> list[Frame] | None:
        """Whether a job the user's group announced is one of this client's prompts (then followed from
        its first event, with a `status` if the caller's queue changed); None when it is not."""
        front = selectors.client_prompts(self.user, self.client_id).filter(job_id=job_id).first()
        if front is None or len(self.prompts) >= FOLLOWED_MAX:
            self.ignore(job_id)
            return None
        self.prompts[job_id] = PromptMessages(prompt_id=front.prompt_id)
        return self.queue_status()

    def update(self, job_id: str, state: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Frame]:
        """The messages for one broadcast of a followed prompt, reading what the broadcast left out."""
        if self.telling not in (None, job_id):
            self.held[job_id] = None
            return self._told_end_missed()
        translation = self.prompts[job_id]
        fresh: Sequence[Mapping[str, Any]] = unseen(events, translation.last_seq)
        if not follows_on(fresh, translation.last_seq, state):
            fresh = timeline_after(job_id, translation.last_seq)
        job: Job | None = None
        outputs: dict[str, Any] | None = None
        remaining: int | None = None
        if any(ends_prompt(event) for event in fresh):
            job = Job.objects.get(pk=job_id)
            if state.get("status") not in FINAL or int(state.get("seq") or 0) < fresh[-1]["seq"]:
                state = job_selectors.job_state(job)  # the broadcast's state predates the end it told
            outputs = node_outputs(JobOutput.objects.filter(job_id=job_id).order_by("id"))
            remaining = self.queue_remaining = selectors.queue_remaining(self.user)
        frames: list[Frame] = list(translation.feed(fresh, state, outputs=outputs, queue_remaining=remaining))
        if translation.ended:
            self.forget(job_id)
        else:
            self._note_preview(job_id, state)
            frames = self._place_preview(job or Job(pk=job_id), translation, frames)
        if self._mind_telling(job_id, translation) and not self.releasing:
            frames += self._release_held()
        return frames

    def _mind_telling(self, job_id: str, translation: PromptMessages) -> bool:
        """Keep `telling` on the prompt whose run is being told; True when that prompt's run ended."""
        running = translation.started and not translation.ended
        if running and self.telling is None:
            self.telling = job_id
        elif not running and self.telling == job_id:
            self.telling = None
            return True
        return False

    def _told_end_missed(self) -> list[Frame]:
        """The prompt being told may have ended with no broadcast reaching this socket (delivery is
        at-most-once): its end is read from the timeline then, and the waiting prompts' news goes out."""
        telling = self.telling
        if telling is None or self.releasing:
            return []
        job = Job.objects.filter(pk=telling, status__in=list(FINAL)).first()
        if job is None or telling not in self.prompts:
            return []
        return self.update(telling, job_selectors.job_state(job), [])

    def _release_held(self) -> list[Frame]:
        """The prompts whose news waited, told from the timeline in the order it came, until one of them
        is still running (then it is the one told, and the rest wait on)."""
        frames: list[Frame] = []
        self.releasing = True  # a released prompt that ends hands on here, not by calling this again
        try:
            while self.held and self.telling is None:
                job_id = next(iter(self.held))
                del self.held[job_id]
                job = Job.objects.filter(pk=job_id).first()
                if job is None or job_id not in self.prompts:
                    continue
                frames += self.update(job_id, job_selectors.job_state(job), [])
        finally:
            self.releasing = False
        return frames

    def deliver(self, job_id: str, state: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Frame]:
        """One broadcast of a job of the user's, on this thread: what the consumer does, with its
        database reads on a thread of their own (learn, update) and the rest on the event loop."""
        if job_id in self.ignored:
            return []
        frames: list[Frame] = []
        if job_id not in self.prompts:
            learned = self.learn(job_id)
            if learned is None:
                return []
            frames += learned
        told = self.fast(job_id, state, events)
        return frames + (told if told is not None else self.update(job_id, state, events))

    def queue_status(self) -> list[Frame]:
        """`status` when the caller's queue_remaining changed since the last one sent."""
        remaining = selectors.queue_remaining(self.user)
        if remaining == self.queue_remaining:
            return []
        self.queue_remaining = remaining
        return [status_message(remaining)]

    # --- the event loop side (no I/O) -------------------------------------------------------------

    def fast(self, job_id: str, state: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Frame] | None:
        """The messages for a broadcast that needs nothing from the database, or None when it does."""
        if self.telling not in (None, job_id):
            if any(event.get("kind") == EventKind.STATUS for event in events):
                return None  # a moment to make sure the prompt being told has not ended unheard (update)
            self.held[job_id] = None  # another prompt's run is being told: this one's news waits
            return []
        translation = self.prompts[job_id]
        fresh = unseen(events, translation.last_seq)
        if not follows_on(fresh, translation.last_seq, state) or any(ends_prompt(event) for event in fresh):
            return None
        if self.telling == job_id and any(event.get("kind") == EventKind.STATUS for event in fresh):
            return None  # retried: back in the queue, the waiting prompts' news goes out (update)
        if job_id in self.previews_due or self._new_preview(job_id, state):
            return None
        told: list[Frame] = list(translation.feed(fresh, state))
        self._mind_telling(job_id, translation)
        return told

    def ignore(self, job_id: str) -> None:
        self.ignored[job_id] = None
        while len(self.ignored) > IGNORED_MAX:
            self.ignored.popitem(last=False)

    def forget(self, job_id: str) -> None:
        """A prompt that ended: later broadcasts of its job (a sweep's note) are not this socket's."""
        self.prompts.pop(job_id, None)
        self.preview_urls.pop(job_id, None)
        self.previews_due.pop(job_id, None)
        self.held.pop(job_id, None)
        self.ignore(job_id)

    def _new_preview(self, job_id: str, state: Mapping[str, Any]) -> bool:
        url = state.get("preview_url")
        return bool(url) and url != self.preview_urls.get(job_id) and state.get("status") == RUNNING

    def _note_preview(self, job_id: str, state: Mapping[str, Any]) -> None:
        """A new preview in the live state is due for the node that state was running."""
        node = (state.get("current_node") or {}).get("id")
        if self._new_preview(job_id, state) and node:
            self.preview_urls[job_id] = str(state["preview_url"])
            self.previews_due[job_id] = str(node)

    def _place_preview(self, job: Job, translation: PromptMessages, frames: list[Frame]) -> list[Frame]:
        """The due preview, as ComfyUI sends it: after its node's `executing` and the progress that
        follows it. Kept while the node is not told yet; dropped once the node is behind us."""
        job_id = str(job.pk)
        node = self.previews_due.get(job_id)
        if node is None:
            return frames
        at = preview_place(frames, node)
        if at is None and translation.current == node and node not in translation.finished:
            at = len(frames)  # the node was told before this update and still runs
        if at is None:
            if node in translation.finished:
                del self.previews_due[job_id]  # its node is done: the preview is stale
            return frames
        del self.previews_due[job_id]
        frame = self._preview_frame(job, translation, node)
        return frames if frame is None else [*frames[:at], frame, *frames[at:]]

    def _preview_frame(self, job: Job, translation: PromptMessages, node: str) -> bytes | None:
        found = preview_image(job)
        if found is None:
            return None
        image, media_type = found
        metadata = None
        if self.preview_metadata:
            metadata = {
                "node_id": node,
                "prompt_id": translation.prompt_id,
                "display_node_id": node,
                "parent_node_id": None,
                "real_node_id": node,
            }
        return preview_frame(image, media_type, metadata)


def preview_place(frames: Sequence[Frame], node: str) -> int | None:
    """Where a preview of `node` goes among `frames`: after the node's last `progress` (or its
    `executing`) and the `progress_state` with it; None when the frames do not tell the node."""
    at = None
    for index, frame in enumerate(frames):
        if isinstance(frame, bytes):
            continue
        data = frame.get("data") or {}
        if frame["type"] in ("executing", "progress") and data.get("node") == node:
            at = index + 1
        elif frame["type"] == "executing" and at is not None:
            break
    return at


def unseen(events: Sequence[Mapping[str, Any]], last_seq: int) -> list[Mapping[str, Any]]:
    return [event for event in events if int(event.get("seq") or 0) > last_seq]


def follows_on(fresh: Sequence[Mapping[str, Any]], last_seq: int, state: Mapping[str, Any]) -> bool:
    """Whether the broadcast's new events start right after the last one told, leave no gap, and
    reach the state's own seq: otherwise some event (a lost broadcast, a note) is only in the database."""
    expected = last_seq
    for event in fresh:
        if int(event.get("seq") or 0) != expected + 1:
            return False
        expected += 1
    return int(state.get("seq") or 0) <= expected


def ends_prompt(event: Mapping[str, Any]) -> bool:
    return event.get("kind") == EventKind.STATUS and (event.get("data") or {}).get("to") in FINAL


def timeline_after(job_id: str, seq: int) -> list[dict[str, Any]]:
    events = JobEvent.objects.filter(job_id=job_id, seq__gt=seq).order_by("seq")[:BACKLOG_LIMIT]
    return live_event_payloads(events)


def finished_nodes(job: Job) -> list[str]:
    """The nodes this attempt finished so far, from the timeline (as the tracker resumes a job)."""
    finished = job.events.filter(kind=EventKind.NODE_FINISHED)
    if job.submitted_at:
        finished = finished.filter(at__gte=job.submitted_at)
    return list(dict.fromkeys(finished.order_by("seq").values_list("node_id", flat=True)[:BACKLOG_LIMIT]))


def preview_image(job: Job) -> tuple[bytes, str] | None:
    """The job's latest live preview (jobs.services.job_preview_store) and its media type, if ComfyUI's
    binary frame can carry it (JPEG or PNG) and it is not over the bound."""
    path = services.job_preview_path(job)
    if path is None:
        return None
    media_type = PREVIEW_TYPES.get(PurePosixPath(path).suffix.lower())
    if media_type is None:
        return None
    try:
        with default_storage.open(path, "rb") as handle:
            image = handle.read(PREVIEW_MAX_BYTES + 1)
    except OSError:  # replaced by the next preview meanwhile
        return None
    if len(image) > PREVIEW_MAX_BYTES:
        return None
    return image, media_type
