"""`anime-jobs`: submit, follow and fetch ComfyUI jobs from a shell.

Data goes to stdout (a submitted job's id, tables, reports, saved files); progress, notes and
errors go to stderr, so `JOB=$(anime-jobs submit shot.json)` captures the id alone. Every failure
is one line on stderr and an exit code (ExitCode), never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from anime_client.client import Client
from anime_client.display import follow, jobs_table, outcome_text
from anime_client.errors import (
    AnimeClientError,
    AuthenticationFailed,
    DownloadRefused,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServerUnreachable,
    WaitTimeout,
    WorkflowError,
)
from anime_client.pipelines import pipeline_table
from anime_client.report import report_csv, report_data, report_json, report_text, since_days
from anime_client.states import Asset, JobState
from anime_client.templates import inputs_table, run_inputs, templates_table
from anime_client.terminal_text import one_line
from anime_client.workflow import InputBinding, load_workflow, parse_input_flag

DEFAULT_URL = "http://127.0.0.1:8000"
STATUSES = ("blocked", "queued", "submitted", "running", "completed", "failed", "cancelled")
PIPED_WIDTH = 160  # tables written to a file or a pipe: wide enough for a job id and its columns
VERSION_MAX = 2**31 - 1  # the server's bound on a template version number


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2  # bad arguments, an unusable workflow file or --input (click's usage errors are 2 as well)
    JOB_CANCELLED = 3
    REFUSED = 4  # the server refused the request (400, 404, 409, ...), or there is nothing to do it on
    NOT_ALLOWED = 5  # 401 / 403: a bad key, or a user without the permission
    RATE_LIMITED = 6  # 429: the line says when to retry
    UNREACHABLE = 7  # no answer, a 5xx, or an answer that is not the API's
    TIMED_OUT = 8  # --timeout on a watch ran out; the job goes on
    INTERRUPTED = 130


def exit_code_for(error: AnimeClientError) -> ExitCode:
    if isinstance(error, WorkflowError):
        return ExitCode.USAGE
    if isinstance(error, AuthenticationFailed | PermissionDenied):
        return ExitCode.NOT_ALLOWED
    if isinstance(error, RateLimited):
        return ExitCode.RATE_LIMITED
    if isinstance(error, ServerUnreachable | ServerError):
        return ExitCode.UNREACHABLE
    if isinstance(error, WaitTimeout):
        return ExitCode.TIMED_OUT
    return ExitCode.REFUSED


class Failure(Exception):
    """A command's own refusal: one line on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CommandLine(click.Group):
    """Turns the client's errors, a command's Failure and Ctrl-C into one line on stderr,
    `anime-jobs: <what went wrong>`, and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AnimeClientError as exc:
            self.fail_with(ctx, str(exc), exit_code_for(exc))
        except Failure as exc:
            self.fail_with(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            self.fail_with(ctx, "interrupted (a submitted job goes on on the server)", ExitCode.INTERRUPTED)

    @staticmethod
    def fail_with(ctx: click.Context, message: str, exit_code: int) -> NoReturn:
        click.echo(f"anime-jobs: {one_line(message)}", err=True)
        ctx.exit(exit_code)


ClientFactory = Callable[..., Client]


@dataclass
class Session:
    """What every command shares: where the server is, the key, and the consoles."""

    url: str
    api_key: str | None
    timeout: float
    make_client: ClientFactory
    out: Console
    err: Console

    def client(self) -> Client:
        if not self.api_key:
            raise Failure("no API key: pass --api-key or set ANIME_API_KEY", ExitCode.USAGE)
        return self.make_client(self.url, self.api_key, timeout=self.timeout, on_notice=self.note)

    def note(self, text: str) -> None:
        self.err.print(Text(f"note: {one_line(text)}"))


def console(*, stderr: bool) -> Console:
    made = Console(stderr=stderr, highlight=False)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = PIPED_WIDTH
    return made


EXIT_CODES_HELP = """\b
Exit codes: 0 done (a watched job completed), 1 the job failed, 2 usage,
3 the job was cancelled, 4 refused by the server (400/404/409), 5 key or
permission refused (401/403), 6 rate-limited (429), 7 server unreachable
or failing, 8 watch timed out, 130 interrupted."""


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.option("--url", envvar="ANIME_URL", default=DEFAULT_URL, show_default=True, help="The server (env ANIME_URL).")
@click.option("--api-key", envvar="ANIME_API_KEY", help="Your API key (env ANIME_API_KEY).")
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True, help="Seconds per request.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, timeout: float) -> None:
    """Submit ComfyUI workflows to the jobs server, follow them live, fetch their outputs."""
    make_client = ctx.obj if callable(ctx.obj) else Client
    ctx.obj = Session(url, api_key, timeout, make_client, console(stderr=False), console(stderr=True))


pass_session = click.make_pass_decorator(Session)


@cli.command()
@click.argument("workflow", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input",
    "-i",
    "input_flags",
    multiple=True,
    metavar="NODE[.INPUT]=FILE",
    help="Upload FILE as an asset for this loader node (repeatable).",
)
@click.option("--priority", "-p", type=click.IntRange(0, 9), default=5, show_default=True)
@click.option("--job-type", "-t", default="image", show_default=True)
@click.option("--backend", "-b", help="A configured backend (default: the server's).")
@click.option("--watch", "-w", is_flag=True, help="Follow the job live until it ends.")
@pass_session
def submit(
    session: Session,
    workflow: Path,
    input_flags: Sequence[str],
    priority: int,
    job_type: str,
    backend: str | None,
    watch: bool,
) -> None:
    """Submit WORKFLOW (a ComfyUI API-format JSON file); prints the job's id."""
    graph = load_workflow(workflow)
    inputs: dict[str, Path] = {}
    for flag in input_flags:
        target, path = parse_input_flag(flag)
        if target in inputs:
            raise WorkflowError(f"--input {target} is given twice")
        inputs[target] = path
    client = session.client()

    def uploaded(binding: InputBinding, asset: Asset) -> None:
        _note_upload(session, binding.path, asset)

    state = client.submit(
        graph, inputs, job_type=job_type, priority=priority, backend=backend or None, on_upload=uploaded
    )
    _submitted(session, client, state, watch)


def _note_upload(session: Session, path: Path, asset: Asset) -> None:
    known = "already on the server" if not asset.created else "uploaded"
    session.note(f"{path}: {known} as asset {asset.id} ({asset.media_type or 'unknown type'})")


def _submitted(session: Session, client: Client, state: JobState, watch: bool) -> None:
    """The new job's id on stdout, a note on stderr, and with --watch its progress to the end."""
    click.echo(state.id)
    session.note(f"job {state.id} {state.status} (priority {state.priority}, backend {one_line(state.backend)})")
    if watch:
        _follow_to_end(session, client, state.id)


@cli.command()
@click.argument("job")
@click.option("--timeout", "give_up_after", type=click.FloatRange(min=1), help="Give up after this many seconds.")
@pass_session
def watch(session: Session, job: str, give_up_after: float | None) -> None:
    """Follow JOB live until it ends: exit 0 completed, 1 failed, 3 cancelled."""
    _follow_to_end(session, session.client(), job, give_up_after)


def _follow_to_end(session: Session, client: Client, job_id: str, give_up_after: float | None = None) -> None:
    """Returns when the job completed; a Failure (exit 1 failed, 3 cancelled) otherwise."""
    final = follow(client.job_watch(job_id, timeout=give_up_after), session.err)
    if final.status == "completed":
        session.err.print(Text(outcome_text(final)))
        return
    code = ExitCode.JOB_FAILED if final.status == "failed" else ExitCode.JOB_CANCELLED
    raise Failure(outcome_text(final), code)


@cli.command(name="list")
@click.option("--status", "-s", type=click.Choice(STATUSES))
@click.option("--job-type", "-t")
@click.option("--backend", "-b")
@click.option("--failure-category", "-f")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True)
@pass_session
def list_jobs(
    session: Session,
    status: str | None,
    job_type: str | None,
    backend: str | None,
    failure_category: str | None,
    limit: int,
) -> None:
    """Your jobs (staff: everyone's), newest first."""
    states = session.client().jobs(
        status=status, job_type=job_type, backend=backend, failure_category=failure_category, limit=limit
    )
    if not states:
        session.note("no jobs match")
        return
    session.out.print(jobs_table(states))


@cli.command()
@click.argument("job")
@pass_session
def cancel(session: Session, job: str) -> None:
    """Cancel JOB: at once while it waits, through ComfyUI once it runs."""
    state = session.client().cancel(job)
    if state.status == "cancelled":
        click.echo(f"job {state.id} cancelled")
    else:
        click.echo(f"job {state.id}: cancel requested; ComfyUI is stopping it (now {state.status})")


@cli.command()
@click.argument("job")
@click.option("--watch", "-w", is_flag=True, help="Follow the new job live until it ends.")
@pass_session
def retry(session: Session, job: str, watch: bool) -> None:
    """Run a failed or cancelled JOB again; prints the new job's id."""
    client = session.client()
    state = client.retry(job)
    click.echo(state.id)
    session.note(f"job {job} retried as job {state.id} ({state.status})")
    if watch:
        _follow_to_end(session, client, state.id)


@cli.command()
@click.argument("job")
@click.option(
    "--download",
    "-d",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Save every output into this folder, under the server's file names.",
)
@click.option("--overwrite", is_flag=True, help="Replace files of the same name in the folder.")
@pass_session
def outputs(session: Session, job: str, directory: Path | None, overwrite: bool) -> None:
    """List a completed JOB's outputs, or download them."""
    client = session.client()
    state = client.job(job)
    if state.status != "completed":
        why = "outputs come when it completes" if not state.finished else "it has no outputs"
        raise Failure(f"job {state.id} is {state.status}: {why}", ExitCode.REFUSED)
    if directory is None:
        session.out.print(_outputs_table(state))
        return
    refused = 0
    for output in state.outputs:
        try:
            saved = client.download_output(output, directory, overwrite=overwrite)
        except DownloadRefused as exc:
            refused += 1
            click.echo(f"anime-jobs: {one_line(str(exc))}", err=True)
            continue
        click.echo(str(saved))
    if refused:
        raise Failure(f"{refused} of {len(state.outputs)} output(s) not saved", ExitCode.REFUSED)


def _outputs_table(state: JobState) -> Table:
    table = Table()
    for name in ("output", "node", "type", "bytes", "ComfyUI's name"):
        table.add_column(name, justify="right" if name in ("output", "bytes") else "left")
    for output in state.outputs:
        size = "" if output.size_bytes is None else f"{output.size_bytes:,}"
        table.add_row(str(output.id), output.node_id, output.media_type, size, one_line(output.filename, 80))
    return table


@cli.command()
@click.option("--since", default="7d", show_default=True, help="1d, 7d, 30d or 90d (the windows the server keeps).")
@click.option("--format", "-o", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@pass_session
def report(session: Session, since: str, fmt: str) -> None:
    """Jobs per type and backend (count, success rate, wait and run p50/p95) and failures per category."""
    try:
        days = since_days(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    data = report_data(session.client().stats(days))
    if fmt == "json":
        click.echo(report_json(data))
    elif fmt == "csv":
        click.echo(report_csv(data), nl=False)
    else:
        session.out.print(report_text(data))


@cli.group()
def template() -> None:
    """Workflow templates: list them, show one's inputs, run one with values instead of JSON."""


@template.command(name="list")
@pass_session
def list_templates(session: Session) -> None:
    """The templates you may run, with their latest version."""
    found = session.client().templates()
    if not found:
        session.note("no templates to run")
        return
    session.out.print(templates_table(found))


@template.command()
@click.argument("name")
@click.option("--version", "-V", type=click.IntRange(1, VERSION_MAX), help="An earlier version (default: the latest).")
@pass_session
def show(session: Session, name: str, version: int | None) -> None:
    """NAME's inputs: kind, default (or required), accepted values, description."""
    found = session.client().template(name, version)
    if found.description:
        session.out.print(Text(one_line(found.description)))
    session.out.print(inputs_table(found))


@template.command(name="run")
@click.argument("name")
@click.option("--version", "-V", type=click.IntRange(1, VERSION_MAX), help="An earlier version (default: the latest).")
@click.option("--set", "-s", "set_flags", multiple=True, metavar="INPUT=VALUE", help="An input's value (repeatable).")
@click.option(
    "--input",
    "-i",
    "input_flags",
    multiple=True,
    metavar="INPUT=FILE",
    help="Upload FILE as an asset for this file input (repeatable).",
)
@click.option("--name", "job_name", default="", help="The job's name.")
@click.option("--project", default="", help="The project label, e.g. ep01.")
@click.option("--shot", default="", help="The shot label, e.g. sh010.")
@click.option("--tag", "tags", multiple=True, help="A free tag (repeatable).")
@click.option("--priority", "-p", type=click.IntRange(0, 9), default=5, show_default=True)
@click.option("--backend", "-b", help="A configured backend (default: the server's).")
@click.option("--watch", "-w", is_flag=True, help="Follow the job live until it ends.")
@pass_session
def run_template(
    session: Session,
    name: str,
    version: int | None,
    set_flags: Sequence[str],
    input_flags: Sequence[str],
    job_name: str,
    project: str,
    shot: str,
    tags: Sequence[str],
    priority: int,
    backend: str | None,
    watch: bool,
) -> None:
    """Run template NAME once; prints the job's id.

    \b
    anime-jobs template run keyframe-shot --set prompt='a fox in the snow' \\
        --set seed=42 --input keyframe=shot12.png --shot sh012 --watch
    """
    flags = [parse_input_flag(flag, "INPUT=FILE, e.g. keyframe=shot12.png") for flag in input_flags]
    client = session.client()
    found = client.template(name, version)
    values, files = run_inputs(found, set_flags, flags)
    state = client.run_template(
        name,
        values,
        files,
        version=version,
        priority=priority,
        backend=backend or None,
        job_name=job_name,
        project=project,
        shot=shot,
        tags=tags,
        on_upload=lambda input_name, asset: _note_upload(session, files[input_name], asset),
    )
    _submitted(session, client, state, watch)


@cli.group()
def pipeline() -> None:
    """Shot pipelines: jobs that read each other's outputs, submitted, followed and cancelled as one."""


@pipeline.command(name="submit")
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input",
    "-i",
    "input_flags",
    multiple=True,
    metavar="KEY.NODE[.INPUT]=FILE",
    help="Upload FILE as an asset for this loader node of this job (repeatable).",
)
@click.option("--watch", "-w", is_flag=True, help="Follow the pipeline's jobs live until it ends.")
@pass_session
def submit_pipeline(session: Session, pipeline_file: Path, input_flags: Sequence[str], watch: bool) -> None:
    """Submit PIPELINE (the JSON body of POST /api/pipelines/); prints the pipeline's id.

    \b
    anime-jobs pipeline submit shot12.json --input keyframe.1=sketch.png --watch
    """
    inputs: dict[str, Path] = {}
    for flag in input_flags:
        target, path = parse_input_flag(flag, "KEY.NODE=FILE or KEY.NODE.INPUT=FILE, e.g. keyframe.1=sketch.png")
        if target in inputs:
            raise WorkflowError(f"--input {target} is given twice")
        inputs[target] = path
    client = session.client()
    state = client.submit_pipeline(
        pipeline_file, inputs, on_upload=lambda item, asset: _note_upload(session, item.binding.path, asset)
    )
    click.echo(state["id"])
    keys = ", ".join(f"{job['key']} {job['id']}" for job in state.get("jobs") or ())
    session.note(f"pipeline {state['id']} {state['status']}: {keys}")
    if watch:
        _follow_pipeline(session, client, str(state["id"]))


@pipeline.command(name="watch")
@click.argument("pipeline_id", metavar="PIPELINE")
@click.option("--timeout", "give_up_after", type=click.FloatRange(min=1), help="Give up after this many seconds.")
@pass_session
def watch_pipeline(session: Session, pipeline_id: str, give_up_after: float | None) -> None:
    """A live table of PIPELINE's jobs until it ends: exit 0 completed, 1 failed, 3 cancelled."""
    _follow_pipeline(session, session.client(), pipeline_id, give_up_after)


@pipeline.command(name="cancel")
@click.argument("pipeline_id", metavar="PIPELINE")
@pass_session
def cancel_pipeline(session: Session, pipeline_id: str) -> None:
    """Cancel every job of PIPELINE that has not ended."""
    state = session.client().pipeline_cancel(pipeline_id)
    click.echo(f"pipeline {state['id']}: {state['status']}")


def _follow_pipeline(session: Session, client: Client, pipeline_id: str, give_up_after: float | None = None) -> None:
    """The live table on stderr (its last state once more at the end, for logs); returns when the
    pipeline completed, a Failure (exit 1 failed, 3 cancelled) otherwise."""
    state: dict[str, Any] = {}
    with Live(console=session.err, auto_refresh=False, transient=True) as live:
        for state in client.pipeline_watch(pipeline_id, timeout=give_up_after):
            live.update(pipeline_table(state, datetime.now(UTC)), refresh=True)
    session.err.print(pipeline_table(state, datetime.now(UTC)))
    if state.get("status") == "completed":
        return
    code = ExitCode.JOB_FAILED if state.get("status") == "failed" else ExitCode.JOB_CANCELLED
    raise Failure(f"pipeline {pipeline_id} {state.get('status')}", code)


def main() -> None:
    cli(prog_name="anime-jobs")
