"""What the command line shows of a job: the progress line, the closing line, the jobs table.

Progress is what the server reports (node, step, overall percent); the ETA is the server's
estimate and is always labelled as one. Text that came from a GPU machine goes through
anime_client.terminal_text before it reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from anime_client.report import duration_text
from anime_client.states import JobState
from anime_client.terminal_text import one_line
from anime_client.watching import JobWatch

NAME_MAX_CHARS = 60


def progress_text(state: JobState, now: datetime | None = None) -> str:
    """e.g. `running  45.0%  KSampler (node 3)  step 9/20  ETA ~1m 12s (estimate, 14:02:31)`."""
    parts = [f"{state.status:<9}", f"{state.progress_percent:5.1f}%"]
    if state.status == "queued" and state.queue_position is not None:
        parts.append(f"#{state.queue_position} in the queue")
    if state.node_name and not state.finished:
        parts.append(f"{one_line(state.node_name, NAME_MAX_CHARS)} (node {one_line(state.node_id or '?', 20)})")
    if state.step and not state.finished:
        parts.append(f"step {state.step[0]:g}/{state.step[1]:g}")
    if state.eta_finish_at and not state.finished:
        parts.append(eta_text(state.eta_finish_at, now or datetime.now(UTC)))
    return "  ".join(parts)


def eta_text(finish_at: datetime, now: datetime) -> str:
    left = max(0.0, (finish_at - now).total_seconds())
    local = finish_at.astimezone().strftime("%H:%M:%S")
    return f"ETA ~{duration_text(left)} (estimate, {local})"


def progress_key(state: JobState) -> tuple[object, ...]:
    """What makes a new line worth printing when the output is not a terminal (a log, a pipe)."""
    step = state.step[0] if state.step else None
    return (state.status, round(state.progress_percent), state.node_id, step, state.queue_position)


def outcome_text(state: JobState) -> str:
    if state.status == "completed":
        run = state.raw.get("run_seconds")
        took = f" in {duration_text(float(run))}" if run is not None else ""
        count = len(state.outputs)
        return f"job {state.id} completed{took}: {count} output{'s' if count != 1 else ''}"
    if state.status == "failed":
        return f"job {state.id} failed ({state.failure_category or 'unknown'}): {one_line(state.error_message)}"
    return f"job {state.id} was {state.status}"


class LiveLine:
    """The progress line on a terminal, drawn again at each refresh so the ETA counts down."""

    def __init__(self) -> None:
        self.state: JobState | None = None

    def __rich__(self) -> Text:
        return Text("waiting for the first state…" if self.state is None else progress_text(self.state))


def follow(watch: JobWatch, console: Console) -> JobState:
    """Show the job's progress until it ends; its final state."""
    state: JobState | None = None
    if console.is_terminal:
        line = LiveLine()
        with Live(line, console=console, refresh_per_second=4):
            for state in watch.states():
                line.state = state
    else:
        shown = None
        for state in watch.states():
            if progress_key(state) != shown:
                shown = progress_key(state)
                console.print(Text(progress_text(state)))
    assert state is not None and state.finished  # a watch ends only at a final state, or raises
    return state


def jobs_table(states: Sequence[JobState]) -> Table:
    table = Table()
    for name in ("job", "status", "type", "backend", "prio", "progress", "now / why", "created"):
        table.add_column(name, justify="right" if name in ("prio", "progress") else "left", no_wrap=name == "job")
    for state in states:
        if state.status == "failed":
            detail = state.failure_category
        elif state.node_name and not state.finished:
            step = f" step {state.step[0]:g}/{state.step[1]:g}" if state.step else ""
            detail = f"{one_line(state.node_name, NAME_MAX_CHARS)}{step}"
        elif state.status == "queued" and state.queue_position is not None:
            detail = f"#{state.queue_position} in the queue"
        else:
            detail = ""
        table.add_row(
            state.id,
            state.status,
            one_line(state.job_type, 20),
            one_line(state.backend, 30),
            str(state.priority),
            f"{state.progress_percent:.0f}%",
            detail,
            state.created_at[:19].replace("T", " "),
        )
    return table
