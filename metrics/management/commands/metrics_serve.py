"""Serve this host's counters and histograms to Prometheus, on a machine without the web server.

A GPU worker on another machine keeps its counters in its own PROMETHEUS_MULTIPROC_DIR, which the web
server cannot read (no process may rely on another's disk): this small server, run beside the
workers, answers GET /metrics with the files of every process under that directory (or
METRICS_MULTIPROC_ROOT), with the same token and network rules as the web's /metrics. The database's
part (jobs by state, queues, backends) is the web's alone: scraping it once is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from metrics.access import Refusal, scrape_refusal
from metrics.exposition import AllProcesses, multiproc_root

StartResponse = Callable[..., Any]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def counters_app(registry: CollectorRegistry) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found\n"]
        refusal = scrape_refusal(
            remote_addr=environ.get("REMOTE_ADDR", ""), authorization=environ.get("HTTP_AUTHORIZATION", "")
        )
        if refusal is Refusal.NETWORK:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"Forbidden: not from an allowed network\n"]
        if refusal is not None:
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')]
            )
            return [b"Unauthorized: a bearer token is required\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store")])
        return [generate_latest(registry)]

    return app


class Command(BaseCommand):
    help = "Serve this host's Prometheus counters (PROMETHEUS_MULTIPROC_DIR) at /metrics, for a GPU host."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for Prometheus elsewhere)")
        parser.add_argument("--port", type=int, default=9464)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        root = multiproc_root()
        if not root:
            raise CommandError("PROMETHEUS_MULTIPROC_DIR (or METRICS_MULTIPROC_ROOT) is not set: nothing to serve")
        if scrape_refusal(remote_addr="", authorization="") is Refusal.NOT_CONFIGURED:
            raise CommandError("set METRICS_TOKEN and/or METRICS_ALLOWED_NETWORKS: /metrics is never open")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AllProcesses(root))
        server = make_server(host, port, counters_app(registry), handler_class=QuietHandler)
        self.stdout.write(f"serving the counters under {root} at http://{host}:{port}/metrics")
        server.serve_forever()
