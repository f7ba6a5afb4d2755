"""A strict Loki stand-in for logpipe's tests and benchmarks: a real HTTP server on a local port.

It answers pushes with Loki's status codes and plain-text bodies (see `loki_wire` and `loki_store` for what is
checked and where it approximates), stores the valid entries of a partially refused push, and, unlike Loki, keeps
exact duplicates so a re-sending shipper is visible. Faults (down/up on the same port, scripted replies, accepted
then dropped connections, delays; `loki_faults`) can be switched on while a shipper pushes. Reads (`loki_http`):
`query_range`, `labels`, `label/<name>/values`, with a visibility delay like Loki's.

    with LokiServer(visibility_delay_secs=0) as loki:
        ...push to loki.url...
        loki.wait_for(3)
        assert loki.lines(service="api") == [...]

Run standalone for benchmarks: `python -m tests.support.lokiserver --port 3100 [--visibility-delay 0]`; it serves
until SIGTERM/SIGINT and prints a summary (optionally `--stats-file` as JSON).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hmac
import itertools
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.support import loki_logql
from tests.support.loki_faults import DEFAULT_BODIES, FaultReply, Faults
from tests.support.loki_http import JSON, Exchange, Handler, HTTPServer, Request, read_endpoint
from tests.support.loki_store import Entry, Limits, Rejected, Store
from tests.support.loki_wire import PushError, decode_body

__all__ = ["Entry", "FaultReply", "Limits", "LokiServer", "Rejected", "Request"]

PUSH_PATH = "/loki/api/v1/push"


class LokiServer:
    """A Loki push/query endpoint on `url`: thread-safe, traffic recorded, faults switchable at any time.

    Keywords: `host`, `port` (0 picks a free one, kept across `down()`/`up()`), `visibility_delay_secs` (entries
    show in queries that long after they were stored; 0 allowed), `require_tenant` (401 `no org id` without
    X-Scope-OrgID), `basic_auth=(user, password)` / `bearer_token` (401 when missing or wrong), `max_body_bytes`
    (413 when the *decompressed* body is larger), `keep_records` (False keeps counters only, for long benchmarks;
    queries then find nothing), `report_every_stream` (see `loki_store`), `clock` (epoch seconds; drives the
    too-old/too-new checks and the query time defaults) and every field of `Limits`. Without X-Scope-OrgID the
    tenant is `fake`, as on a Loki without auth.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, visibility_delay_secs: float = 1.0,
                 require_tenant: bool = False, basic_auth: tuple[str, str] | None = None,
                 bearer_token: str | None = None, max_body_bytes: int | None = None, keep_records: bool = True,
                 report_every_stream: bool = True, clock: Callable[[], float] = time.time,
                 **limits: float) -> None:  # fmt: skip
        self.limits = Limits(**limits)  # type: ignore[arg-type]
        self.store = Store(self.limits, clock, keep_records=keep_records, report_every_stream=report_every_stream)
        self.host, self._port, self.clock = host, port, clock
        self.visibility_delay_secs = visibility_delay_secs
        self.require_tenant, self.max_body_bytes = require_tenant, max_body_bytes
        self._auth = None
        if basic_auth is not None:
            self._auth = "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()
        if bearer_token is not None:
            self._auth = f"Bearer {bearer_token}"
        self.faults = Faults()
        self.ready = True
        self.requests: list[Request] = []
        self.errors: list[Exception] = []  # unexpected exceptions while serving (bugs in this server)
        self._lock = threading.Lock()  # requests, connections, listener
        self._seq = itertools.count(1)
        self._conns: set[socket.socket] = set()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._down = threading.Event()
        self._generation = 0

    # lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def start(self) -> LokiServer:
        self.up()
        return self

    def stop(self) -> None:
        self.down()

    def __enter__(self) -> LokiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def up(self) -> None:
        """Listen (again), on the same port as before; nothing to do when already listening."""
        if self._httpd is not None:
            return
        deadline = time.monotonic() + 5
        while True:
            try:
                httpd = HTTPServer((self.host, self._port), self)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True, name="lokiserver")
        with self._lock:
            self._httpd, self._thread, self._port = httpd, thread, int(httpd.server_address[1])
            self._down.clear()
        thread.start()

    def down(self) -> None:
        """Close the listening socket and every open connection: clients see refused or reset connections.
        A push held by `delay()` at that moment is not stored."""
        with self._lock:
            httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
            self._generation += 1
            self._down.set()
            conns = list(self._conns)
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join()

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # faults

    def fail(self, status: int, count: int | None = None, seconds: float | None = None,
             retry_after: float | str | None = None, body: str | None = None) -> None:  # fmt: skip
        """Answer the next `count` pushes (or those of the next `seconds`; with neither, every push until
        `clear_faults()`) with `status` and `body` (a Loki-like default), before storing anything.
        `retry_after` sets the Retry-After header."""
        self.faults.fail(status, count, seconds, retry_after, body)

    def fail_queries(self, seconds: float, status: int = 503) -> None:
        """Answer every query for the next `seconds` with `status`, as Loki does while it has no querier ready
        (pushes are not affected)."""
        self.faults.fail_queries(status, seconds, "no healthy querier available")

    def accept_then_drop(self, count: int = 1) -> None:
        """Store the next `count` pushes as usual, then close their connections without answering."""
        self.faults.drop(count)

    def store_some_then_drop(self, keep: Callable[[dict[str, str]], bool], count: int = 1) -> None:
        """For the next `count` pushes, store only the streams whose labels `keep` accepts, then close the
        connection without answering: a distributor that wrote some streams of a push and failed the others."""
        self.faults.partial_drop(count, keep)

    def delay(self, seconds: float, count: int | None = None) -> None:
        """Hold the next `count` pushes (every push, without a count) for `seconds` before storing and answering."""
        self.faults.delay(seconds, count)

    def clear_faults(self) -> None:
        """Drop every fault rule and become ready again (the record of past fault replies stays)."""
        self.faults.clear()
        self.ready = True

    @property
    def fault_replies(self) -> list[FaultReply]:
        return list(self.faults.replies)

    # records

    def entries(self, tenant: str | None = None, **labels: str) -> list[Entry]:
        """Stored entries in arrival order, duplicates included, filtered by tenant and exact label values."""
        with self.store.changed:
            found = list(self.store.entries)
        return [e for e in found if (tenant is None or e.tenant == tenant) and _has(e.labels, labels)]

    def lines(self, tenant: str | None = None, **labels: str) -> list[str]:
        return [e.line for e in self.entries(tenant, **labels)]

    def rejected(self, tenant: str | None = None, **labels: str) -> list[Rejected]:
        """Refused entries in arrival order, each with Loki's discard reason and message."""
        with self.store.changed:
            found = list(self.store.rejected)
        return [r for r in found if (tenant is None or r.tenant == tenant) and _has(r.labels, labels)]

    def duplicates(self) -> list[Entry]:
        """Entries whose (tenant, labels, timestamp, line) had been stored before, in arrival order."""
        return self.store.duplicates()

    def queries(self) -> list[dict[str, str]]:
        """The parameters of every `query_range` request, in arrival order."""
        with self._lock:
            found = [r.query for r in self.requests if r.path.endswith("/query_range")]
        return [{k: v[0] for k, v in parse_qs(q).items()} for q in found]

    def pushes(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == PUSH_PATH]

    def wait_for(self, predicate_or_count: Callable[[], bool] | int, timeout: float = 5.0) -> None:
        """Block until `count` entries are stored in all or `predicate()` is true; TimeoutError after `timeout`."""
        store = self.store
        if isinstance(predicate_or_count, int):
            count = predicate_or_count

            def predicate() -> bool:
                return store.stored_count >= count
        else:
            predicate = predicate_or_count
        deadline = time.monotonic() + timeout
        with store.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    done = f"{store.stored_count} stored, {store.rejected_count} rejected"
                    raise TimeoutError(f"after {timeout}s: {done}, {len(self.pushes())} pushes")
                store.changed.wait(min(remaining, 0.05))

    def clear(self) -> None:
        """Forget entries, rejections, requests, fault replies and stream state (a fresh Loki); rules stay."""
        self.store.clear()
        self.faults.forget()
        with self._lock:
            self.requests.clear()

    def stats(self) -> dict[str, object]:
        """The summary the CLI prints: counts of entries, duplicates, rejections (by reason), streams, pushes."""
        store = self.store
        with store.changed:
            duplicates = len(store.duplicates()) if store.keep_records else store.duplicate_count
            reasons = Counter(r.reason for r in store.rejected)
            streams = store.stream_count()
        pushes = self.pushes()
        return {
            "entries": store.stored_count,
            "duplicates": duplicates,
            "rejected": store.rejected_count,
            "rejected_by_reason": dict(reasons),
            "streams": streams,
            "pushes": len(pushes),
            "push_statuses": {str(k): v for k, v in sorted(Counter(r.status for r in pushes).items())},
            "body_bytes": sum(r.body_bytes for r in pushes),
            "decoded_bytes": sum(r.decoded_bytes for r in pushes),
        }

    # HTTP

    def serve_request(self, h: Handler) -> None:
        exchange = Exchange(body_bytes=0, at=time.monotonic(), received_at=time.time())
        parts = urlsplit(h.path)
        try:
            raw = h.body() if h.command == "POST" else b""
            exchange.body_bytes = len(raw)
            if parts.path == "/ready":
                ok = self.ready
                self._answer(h, exchange, 200 if ok else 503, "ready" if ok else "Ingester not ready: set unready")
            elif parts.path == PUSH_PATH:
                if h.command == "POST":
                    self._push(h, raw, exchange)
                else:
                    self._answer(h, exchange, 405, b"")
            elif parts.path.startswith("/loki/api/v1/"):
                self._read(h, parts.path, parts.query, raw, exchange)
            else:
                self._answer(h, exchange, 404, "404 page not found")
        except OSError:
            h.close_connection = True  # the client went away, or down() closed the connection
        except Exception as exc:  # a bug in this server: answer 500 and keep it for the test to see
            with self._lock:
                self.errors.append(exc)
            self._answer(h, exchange, 500, f"lokiserver bug: {exc!r}")
        finally:
            self._log(h, parts.path, exchange)

    def _log(self, h: Handler, path: str, exchange: Exchange) -> None:
        """Record the request; called before the answer is written, so a client that got its answer finds it."""
        if exchange.logged:
            return
        exchange.logged = True
        hdr = h.headers
        request = Request(exchange.seq or next(self._seq), h.command, path, exchange.status, exchange.entries,
                          exchange.stored, exchange.rejected, hdr.get("X-Scope-OrgID"), hdr.get("Content-Type"),
                          hdr.get("Content-Encoding"), hdr.get("User-Agent"), exchange.body_bytes,
                          exchange.decoded_bytes, exchange.fault, exchange.at, exchange.received_at,
                          urlsplit(h.path).query)  # fmt: skip
        with self._lock:
            self.requests.append(request)

    def _answer(self, h: Handler, exchange: Exchange, status: int, body: str | bytes, *, content_type: str = "",
                headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        exchange.status = status
        self._log(h, urlsplit(h.path).path, exchange)
        if content_type:
            h.reply(status, body, content_type=content_type, headers=headers)
        else:
            h.reply(status, body, headers=headers)

    def _tenant(self, h: Handler, exchange: Exchange) -> str | None:
        """The request's tenant, or None after answering 401/400 as Loki (or a gateway in front of it) would."""
        auth = h.headers.get("Authorization")
        if self._auth is not None and (auth is None or not hmac.compare_digest(auth.encode(), self._auth.encode())):
            scheme = self._auth.split(" ", 1)[0]
            challenge = {"WWW-Authenticate": f'{scheme} realm="loki"'}
            self._answer(h, exchange, 401, "401 Unauthorized", headers=challenge)
            return None
        tenant = h.headers.get("X-Scope-OrgID")
        if not tenant and self.require_tenant:
            self._answer(h, exchange, 401, "no org id")
            return None
        if tenant and "|" in tenant:
            self._answer(h, exchange, 400, "multiple org IDs present")
            return None
        return tenant or "fake"

    def _push(self, h: Handler, raw: bytes, exchange: Exchange) -> None:
        seq = exchange.seq = next(self._seq)
        generation = self._generation
        tenant = self._tenant(h, exchange)
        if tenant is None:
            return
        try:
            body = decode_body(h.headers.get("Content-Type"), h.headers.get("Content-Encoding"), raw,
                               self.max_body_bytes)  # fmt: skip
            exchange.entries, exchange.decoded_bytes = body.entry_count, body.decoded_bytes
            error = None
        except PushError as exc:
            body, error = None, exc
        held = self.faults.take("delay")
        if held is not None:
            exchange.fault = "delay"
            self.faults.acted(held, seq)
            if self._down.wait(held.seconds) or generation != self._generation:
                exchange.status, h.close_connection = 0, True  # went down meanwhile: not stored, not answered
                return
        refusal = self.faults.take("fail")
        if refusal is not None:
            exchange.fault = "fail"
            text = refusal.body
            if text is None:
                size = sum(len(e[1]) for s in body.streams for e in s.entries) if body else 0
                template = DEFAULT_BODIES.get(refusal.status, HTTPStatus(refusal.status).phrase)
                text = template.format(tenant=tenant, lines=exchange.entries, size=size)
            headers = {"Retry-After": refusal.retry_after} if refusal.retry_after is not None else None
            self.faults.acted(refusal, seq)
            self._answer(h, exchange, refusal.status, text, headers=headers)
            return
        if body is None:
            assert error is not None
            self._answer(h, exchange, error.status, error.message)
            return
        if not body.streams:
            self._answer(h, exchange, 422, "error at least one valid stream is required for ingestion")
            return
        size = sum(len(line.encode()) + _metadata_size(md) for stream in body.streams for _, line, md in stream.entries)
        if not self.store.admit(tenant, size):
            limit = int(self.limits.ingestion_rate_mb * (1 << 20))
            self._answer(h, exchange, 429, DEFAULT_BODIES[429].replace("4194304", str(limit)).format(
                tenant=tenant, lines=exchange.entries, size=size))  # fmt: skip
            return
        partial = self.faults.take("partial_drop")
        if partial is not None and partial.keep is not None:
            body.streams = [stream for stream in body.streams if partial.keep(stream.labels)]
        outcome = self.store.ingest(tenant, body, seq)
        exchange.stored, exchange.rejected = outcome.stored, outcome.rejected
        dropped = partial or self.faults.take("drop")
        if dropped is not None:
            exchange.fault, exchange.status = "drop", 0
            self.faults.acted(dropped, seq)
            self._log(h, PUSH_PATH, exchange)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(h, exchange, outcome.status, outcome.body)

    def _read(self, h: Handler, path: str, query: str, raw: bytes, exchange: Exchange) -> None:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if h.command == "POST" and raw:
            params |= {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        tenant = self._tenant(h, exchange)
        if tenant is None:
            return
        refusal = self.faults.take("query_fail")
        if refusal is not None:
            self._answer(h, exchange, refusal.status, refusal.body or "")
            return
        try:
            categorize = "categorize-labels" in h.headers.get("X-Loki-Response-Encoding-Flags", "")
            data = read_endpoint(self.store, path, params, tenant, categorize=categorize, clock=self.clock,
                                 visibility_delay_secs=self.visibility_delay_secs)  # fmt: skip
        except loki_logql.QueryError as exc:
            self._answer(h, exchange, 400, str(exc))
            return
        if data is None:
            self._answer(h, exchange, 404, "404 page not found")
        else:
            body = orjson.dumps({"status": "success", "data": data})
            self._answer(h, exchange, 200, body, content_type=JSON)


def _metadata_size(metadata: Mapping[str, str] | None) -> int:
    return sum(len(k) + len(v) for k, v in metadata.items()) if metadata else 0


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.lokiserver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--visibility-delay", type=float, default=1.0, help="seconds before entries are queryable")
    parser.add_argument("--out-of-order-window", type=float, default=3600.0, help="seconds")
    parser.add_argument("--require-tenant", action="store_true")
    parser.add_argument("--count-only", action="store_true", help="keep counters, not entries (long benchmarks)")
    parser.add_argument("--stats-file", help="write the summary as JSON here on exit")
    args = parser.parse_args(argv)
    server = LokiServer(host=args.host, port=args.port, visibility_delay_secs=args.visibility_delay,
                        require_tenant=args.require_tenant, keep_records=not args.count_only,
                        out_of_order_window_secs=args.out_of_order_window)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"lokiserver listening on {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    stats = server.stats()
    print(f"lokiserver stopped: {stats['entries']} entries stored, {stats['duplicates']} duplicates, "
          f"{stats['rejected']} rejected, {stats['pushes']} pushes", flush=True)  # fmt: skip
    if args.stats_file:
        with open(args.stats_file, "wb") as out:
            out.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
