"""The test Loki answers pushes as loki-push.md records Loki does, keeps every entry, and misbehaves on request."""

from __future__ import annotations

import datetime as dt
import gzip
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import loki_wire
from tests.support.lokiserver import LokiServer

NOW_S = dt.datetime(2026, 11, 23, 17, 3, 9, tzinfo=dt.UTC).timestamp()
NOW_NS = int(NOW_S) * 10**9 + 818_373_504
SEC = 10**9
API = {"service": "api", "level": "info"}
JSON = {"Content-Type": "application/json"}
PUSH = "/loki/api/v1/push"
TLS = ssl.create_default_context()  # built once: httpx would load the CA bundle for every client


def http(base_url: str = "", **kw: object) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=JSON, timeout=5, verify=TLS, **kw)  # type: ignore[arg-type]


def body(*streams: tuple[dict[str, str], list[list[object]]]) -> bytes:
    return orjson.dumps({"streams": [{"stream": labels, "values": values} for labels, values in streams]})


def entry(ts_ns: int, line: str, metadata: dict[str, str] | None = None) -> list[object]:
    return [str(ts_ns), line, metadata] if metadata else [str(ts_ns), line]


@pytest.fixture
def loki():
    with LokiServer(visibility_delay_secs=0, clock=lambda: NOW_S) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def client(loki):
    with http(loki.url) as c:
        yield c


def push(client: httpx.Client, payload: bytes, **headers: str) -> httpx.Response:
    return client.post(PUSH, content=payload, headers=headers)


# loki-push.md, "Answers seen"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_valid_push_answers_204_with_empty_body(loki, client, compress):
    payload = body((API, [entry(NOW_NS, "GET /users 200", {"trace_id": "6f0b"})]))
    headers = {"Content-Encoding": "gzip"} if compress else {}
    r = push(client, gzip.compress(payload) if compress else payload, **headers)
    assert (r.status_code, r.content) == (204, b"")
    [stored] = loki.entries()
    assert (stored.tenant, dict(stored.labels), stored.ts_ns, stored.line) == ("fake", API, NOW_NS, "GET /users 200")
    assert dict(stored.metadata) == {"trace_id": "6f0b"}
    assert stored.push_seq == loki.pushes()[0].seq


def test_same_entry_again_answers_204_and_is_recorded_twice(loki, client):
    payload = body((API, [entry(NOW_NS, "GET /users 200")]))
    assert push(client, payload).status_code == 204
    assert push(client, payload).status_code == 204
    assert loki.lines() == ["GET /users 200", "GET /users 200"]
    [duplicate] = loki.duplicates()
    assert duplicate.push_seq == loki.pushes()[1].seq
    assert loki.stats()["duplicates"] == 1


def test_entry_a_few_seconds_older_than_newest_is_accepted(loki, client):
    assert push(client, body((API, [entry(NOW_NS, "new")]))).status_code == 204
    assert push(client, body((API, [entry(NOW_NS - 5 * SEC, "older")]))).status_code == 204
    assert loki.lines() == ["new", "older"]


def test_entry_behind_the_out_of_order_window_answers_loki_block(loki, client):
    assert push(client, body((API, [entry(NOW_NS, "newest")]))).status_code == 204
    r = push(client, body((API, [entry(NOW_NS - 3601 * SEC, "late")])))
    assert r.status_code == 400
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == (
        "entry with timestamp 2026-11-23 16:03:08.818373504 +0000 UTC ignored, reason: 'entry too far behind, "
        "entry timestamp is: 2026-11-23T16:03:08Z, oldest acceptable timestamp is: 2026-11-23T16:03:09Z',\n"
        """user 'fake', total ignored: 1 out of 1 for stream: {level="info", service="api"}\n"""
    )
    assert loki.lines() == ["newest"]
    [rejected] = loki.rejected()
    assert (rejected.reason, rejected.line) == ("too_far_behind", "late")


def test_entry_beyond_creation_grace_answers_too_new(loki, client):
    r = push(client, body(({"service": "api"}, [entry(NOW_NS + 3 * 3600 * SEC, "future")])))
    assert (r.status_code, r.text) == (
        400,
        """entry for stream '{service="api"}' has timestamp too new: 2026-11-23T20:03:09Z\n""",
    )
    assert loki.entries() == []


STREAMS = "loghttp.PushRequest.Streams: "
NOT_A_NUMBER = "Value looks like Number/Boolean/None, but can't find its end"
NOT_A_STRING = "Value is string, but can't find closing '\"' symbol"
BAD_NAME = "couldn't parse labels: 1:9: parse error: unexpected character inside braces: '-'"


@pytest.mark.parametrize(
    ("payload", "start", "contains"),
    [
        pytest.param(body((API, [entry(NOW_NS, "x")]))[:60], STREAMS, "error found in #10 byte of", id="truncated"),
        pytest.param(body((API, [["17954x", "x"]])), STREAMS, NOT_A_NUMBER, id="timestamp-not-a-number"),
        pytest.param(body((API, [[NOW_NS, "x"]])), STREAMS, NOT_A_STRING, id="timestamp-a-json-number"),
        pytest.param(body(({"service-name": "api"}, [entry(NOW_NS, "x")])), BAD_NAME, "", id="invalid-label-name"),
        pytest.param(body((API, [[str(NOW_NS), "x", {"n": 1}]])), STREAMS, NOT_A_STRING, id="metadata-not-a-string"),
        pytest.param(b"", "EOF", "", id="empty-body"),
    ],
)
def test_undecodable_push_answers_400_and_stores_nothing(loki, client, payload, start, contains):
    r = push(client, payload)
    assert r.status_code == 400
    assert r.text.startswith(start)
    assert contains in r.text
    assert r.text.endswith("\n")
    assert loki.entries() == []


def test_empty_label_set_answers_400(loki, client):
    r = push(client, body(({}, [entry(NOW_NS, "x")])))
    assert (r.status_code, r.text) == (400, "error at least one label pair is required per stream\n")
    assert [x.reason for x in loki.rejected()] == ["missing_labels"]


def test_gzip_header_on_plain_body_answers_invalid_header(loki, client):
    r = push(client, body((API, [entry(NOW_NS, "x")])), **{"Content-Encoding": "gzip"})
    assert (r.status_code, r.text) == (400, "gzip: invalid header\n")


def test_protobuf_content_type_with_json_body_answers_snappy_corrupt(loki, client):
    r = push(client, body((API, [entry(NOW_NS, "x")])), **{"Content-Type": "application/x-protobuf"})
    assert (r.status_code, r.text) == (400, "snappy: corrupt input\n")


def test_no_streams_answers_422(loki, client):
    r = push(client, b'{"streams":[]}')
    assert (r.status_code, r.text) == (422, "error at least one valid stream is required for ingestion\n")


# loki-push.md, "Partial success"


def test_partial_push_stores_valid_entries_and_names_each_refusal(loki, client):
    values = [
        entry(NOW_NS - 8 * 86400 * SEC, "too old"),
        entry(NOW_NS, "kept"),
        entry(NOW_NS, "x" * (256 * 1024 + 1)),
        entry(NOW_NS + 3600 * SEC, "too new"),
    ]
    r = push(client, body(({"service": "api"}, values)))
    assert r.status_code == 400
    assert loki.lines() == ["kept"]
    reasons = [x.reason for x in loki.rejected()]
    assert reasons == ["greater_than_max_sample_age", "line_too_long", "too_far_in_future"]
    parts = r.text.rstrip("\n").split("; ")
    assert len(parts) == 3
    assert parts[0].startswith("1 errors like: entry for stream '{service=\"api\"}' has timestamp too old: ")
    assert parts[1] == (
        "1 errors like: Max entry size '262144' bytes exceeded for stream '{service=\"api\"}' while adding an entry "
        "with length '262145' bytes"
    )


def test_partial_push_across_streams_answers_one_block_per_affected_stream(loki, client):
    other = {"service": "worker"}
    push(client, body((API, [entry(NOW_NS, "a")]), (other, [entry(NOW_NS, "b")])))
    late = [entry(NOW_NS - 2 * 3600 * SEC, "late"), entry(NOW_NS, "fine")]
    r = push(client, body((API, late), ({"service": "web"}, [entry(NOW_NS, "c")]), (other, late)))
    assert r.status_code == 400
    blocks = r.text.rstrip("\n").split("\n")
    assert blocks[1] == """user 'fake', total ignored: 1 out of 2 for stream: {level="info", service="api"}"""
    assert blocks[3] == """user 'fake', total ignored: 1 out of 2 for stream: {service="worker"}"""
    assert sorted(loki.lines()) == ["a", "b", "c", "fine", "fine"]


def test_like_loki_only_the_last_streams_result_counts_when_asked():
    with LokiServer(visibility_delay_secs=0, report_every_stream=False) as server, http() as c:
        now = time.time_ns()
        c.post(server.url + PUSH, content=body((API, [entry(now, "a")])))
        late = body((API, [entry(now - 2 * 3600 * SEC, "late")]), ({"service": "web"}, [entry(now, "b")]))
        assert c.post(server.url + PUSH, content=late).status_code == 204  # Loki's instance.Push forgets the error
        assert [x.reason for x in server.rejected()] == ["too_far_behind"]


def test_block_lists_ten_entries_but_counts_all(loki, client):
    push(client, body((API, [entry(NOW_NS, "newest")])))
    r = push(client, body((API, [entry(NOW_NS - 7200 * SEC + i, f"old {i}") for i in range(25)])))
    assert r.text.count("ignored, reason:") == 10
    assert "total ignored: 25 out of 25 for stream" in r.text


def test_structured_metadata_limits_refuse_the_entry(loki, client):
    too_large = {"k": "v" * (64 * 1024)}
    too_many = {f"k{i}": "v" for i in range(129)}
    r = push(client, body((API, [entry(NOW_NS, "big", too_large), entry(NOW_NS, "many", too_many)])))
    assert r.status_code == 400
    assert "has structured metadata too large: '65537' bytes, limit: '65536' bytes" in r.text
    assert "has too many structured metadata labels: '129', limit: '128'" in r.text
    assert loki.entries() == []


def test_out_of_order_window_is_per_stream_and_configurable():
    with LokiServer(out_of_order_window_secs=60, clock=lambda: NOW_S) as server, http() as c:
        c.post(server.url + PUSH, content=body((API, [entry(NOW_NS, "newest")])))
        older = NOW_NS - 61 * SEC
        assert c.post(server.url + PUSH, content=body(({"service": "web"}, [entry(older, "other stream")]))).is_success
        r = c.post(server.url + PUSH, content=body((API, [entry(older, "late"), entry(NOW_NS - 59 * SEC, "ok")])))
        assert r.status_code == 400
        assert server.lines() == ["newest", "other stream", "ok"]


# tenants, auth, size


def test_tenant_comes_from_x_scope_orgid_and_separates_data(loki, client):
    push(client, body((API, [entry(NOW_NS, "for a")])), **{"X-Scope-OrgID": "a"})
    push(client, body((API, [entry(NOW_NS, "for b")])), **{"X-Scope-OrgID": "b"})
    assert loki.lines(tenant="a") == ["for a"]
    params = {"query": '{service="api"}', "start": str(NOW_NS), "end": str(NOW_NS + 1)}
    r = client.get("/loki/api/v1/query_range", params=params, headers={"X-Scope-OrgID": "b"})
    assert [v[1] for s in r.json()["data"]["result"] for v in s["values"]] == ["for b"]
    r = push(client, body((API, [entry(NOW_NS - 7200 * SEC, "late")])), **{"X-Scope-OrgID": "a"})
    assert "user 'a', total ignored: 1 out of 1" in r.text


def test_require_tenant_answers_401_no_org_id():
    with LokiServer(require_tenant=True) as server, http(server.url) as c:
        r = c.post(PUSH, content=body((API, [entry(time.time_ns(), "x")])))
        assert (r.status_code, r.text) == (401, "no org id\n")
        r = c.post(PUSH, content=body((API, [entry(time.time_ns(), "x")])), headers={"X-Scope-OrgID": "t"})
        assert r.status_code == 204


@pytest.mark.parametrize(
    ("options", "good", "bad"),
    [
        ({"basic_auth": ("logpipe", "s3cret")}, httpx.BasicAuth("logpipe", "s3cret"), httpx.BasicAuth("logpipe", "no")),
        ({"bearer_token": "tok"}, {"Authorization": "Bearer tok"}, {"Authorization": "Bearer nope"}),
    ],
    ids=["basic", "bearer"],
)
def test_wrong_or_missing_credentials_answer_401(options, good, bad):
    payload = body((API, [entry(time.time_ns(), "x")]))
    with LokiServer(**options) as server, http(server.url) as c:
        for creds in (None, bad):
            kw = {"auth": creds} if isinstance(creds, httpx.BasicAuth) else {"headers": creds}
            r = c.post(PUSH, content=payload, **kw)
            assert (r.status_code, r.text) == (401, "401 Unauthorized\n")
            assert "WWW-Authenticate" in r.headers
        kw = {"auth": good} if isinstance(good, httpx.BasicAuth) else {"headers": good}
        assert c.post(PUSH, content=payload, **kw).status_code == 204
        assert len(server.entries()) == 1


def test_body_larger_than_max_body_bytes_after_decompression_answers_413():
    payload = body((API, [entry(time.time_ns(), "y" * 5000)]))
    with LokiServer(max_body_bytes=4096) as server, http(server.url) as c:
        r = c.post(PUSH, content=gzip.compress(payload), headers={"Content-Encoding": "gzip"})
        assert (r.status_code, r.text) == (413, f"request body too large: {len(payload)} bytes, limit: 4096 bytes\n")
        assert server.entries() == []


# faults


def test_down_refuses_connections_and_up_serves_the_same_port_again(loki, client):
    port = loki.port
    assert push(client, body((API, [entry(NOW_NS, "before")]))).status_code == 204
    loki.down()
    with pytest.raises(httpx.TransportError):
        push(client, body((API, [entry(NOW_NS, "while down")])))
    loki.up()
    assert loki.port == port
    assert push(client, body((API, [entry(NOW_NS, "after")]))).status_code == 204
    assert loki.lines() == ["before", "after"]


def test_down_closes_open_keep_alive_connections(loki):
    with http(loki.url, transport=httpx.HTTPTransport(retries=0, verify=TLS)) as c:
        assert c.get("/ready").text == "ready\n"
        loki.down()
        with pytest.raises(httpx.TransportError):
            c.get("/ready")
        loki.up()
        assert c.get("/ready").status_code == 200


def test_fail_answers_429_with_retry_after_before_storing(loki, client):
    loki.fail(429, count=1, retry_after=2)
    r = push(client, body((API, [entry(NOW_NS, "refused")])))
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"
    assert r.text.startswith("Ingestion rate limit exceeded for user fake")
    assert loki.entries() == []
    assert push(client, body((API, [entry(NOW_NS, "accepted")]))).status_code == 204
    [reply] = loki.fault_replies
    assert (reply.kind, reply.status, reply.retry_after, reply.push_seq) == ("fail", 429, "2", loki.pushes()[0].seq)
    assert loki.pushes()[1].at >= reply.at


def test_fail_for_a_duration_then_recover(loki, client):
    loki.fail(503, seconds=0.5, body='{"error": "try later"}')
    r = push(client, body((API, [entry(NOW_NS, "x")])))
    assert (r.status_code, r.text) == (503, '{"error": "try later"}\n')
    time.sleep(0.55)
    assert push(client, body((API, [entry(NOW_NS, "x")]))).status_code == 204


def test_fail_without_limit_lasts_until_cleared(loki, client):
    loki.fail(500)
    assert [push(client, body((API, [entry(NOW_NS, "x")]))).status_code for _ in range(3)] == [500, 500, 500]
    loki.clear_faults()
    assert push(client, body((API, [entry(NOW_NS, "x")]))).status_code == 204


def test_accept_then_drop_stores_but_the_client_gets_no_answer(loki, client):
    loki.accept_then_drop(1)
    with pytest.raises(httpx.RemoteProtocolError):
        push(client, body((API, [entry(NOW_NS, "stored anyway")])))
    assert loki.lines() == ["stored anyway"]
    assert push(client, body((API, [entry(NOW_NS, "next")]))).status_code == 204
    assert [(r.status, r.fault) for r in loki.pushes()] == [(0, "drop"), (204, None)]


def test_delay_holds_the_answer(loki, client):
    loki.delay(0.3, count=1)
    started = time.monotonic()
    assert push(client, body((API, [entry(NOW_NS, "slow")]))).status_code == 204
    assert time.monotonic() - started >= 0.3
    assert loki.lines() == ["slow"]


def test_push_held_by_delay_is_lost_when_the_server_goes_down(loki):
    loki.delay(5, count=1)
    errors: list[Exception] = []

    def held_push() -> None:
        with http() as c:
            try:
                c.post(loki.url + PUSH, content=body((API, [entry(NOW_NS, "lost")])))
            except httpx.TransportError as exc:
                errors.append(exc)

    thread = threading.Thread(target=held_push)
    thread.start()
    loki.wait_for(lambda: len(loki.fault_replies) == 1)
    loki.down()
    thread.join(5)
    assert len(errors) == 1
    assert loki.entries() == []


def test_ready_reports_readiness(loki, client):
    assert (client.get("/ready").status_code, client.get("/ready").text) == (200, "ready\n")
    loki.ready = False
    assert client.get("/ready").status_code == 503


# queries


@pytest.fixture
def filled(loki, client):
    streams = [
        ({"service": "api", "level": "info"}, [entry(NOW_NS + i * SEC, f"api info {i}") for i in range(5)]),
        ({"service": "api", "level": "error"}, [entry(NOW_NS + 10 * SEC, "api error", {"trace_id": "t1"})]),
        ({"service": "worker", "level": "info"}, [entry(NOW_NS + 20 * SEC, "worker info")]),
    ]
    assert push(client, body(*streams)).status_code == 204
    return loki


def lines_of(client: httpx.Client, query: str, **params: str) -> list[str]:
    params = {"start": str(NOW_NS), "end": str(NOW_NS + 60 * SEC)} | params
    r = client.get("/loki/api/v1/query_range", params={"query": query} | params)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (r.json()["status"], data["resultType"]) == ("success", "streams")
    ordered = sorted((v for s in data["result"] for v in s["values"]), key=lambda v: int(v[0]))
    return [v[1] for v in ordered]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('{service="worker"}', ["worker info"]),
        ('{service="api", level!="info"}', ["api error"]),
        ('{service=~"api|work.*", level="info"}', [*(f"api info {i}" for i in range(5)), "worker info"]),
        ('{service=~"ap"}', []),
        ('{service!~"api", level="info"}', ["worker info"]),
        ('{service="api"} |= "info 3"', ["api info 3"]),
        ('{service="api"} != "info" | trace_id="t1"', ["api error"]),
    ],
)  # fmt: skip
def test_query_range_selectors_and_filters(filled, client, query, expected):
    assert lines_of(client, query) == expected


def test_query_range_start_is_inclusive_and_end_exclusive(filled, client):
    assert lines_of(client, '{level="info"}', start=str(NOW_NS + SEC), end=str(NOW_NS + 3 * SEC)) == [
        "api info 1",
        "api info 2",
    ]
    rfc = "2026-11-23T17:03:10.818373504Z"
    assert lines_of(client, '{level="info"}', start=rfc, end=f"{NOW_S + 2.818}") == ["api info 1"]


def test_query_range_limit_and_direction(filled, client):
    def values(direction: str) -> list[str]:
        params = {"query": '{service="api"}', "start": str(NOW_NS), "end": str(NOW_NS + 60 * SEC), "limit": "2"}
        r = client.get("/loki/api/v1/query_range", params=params | ({"direction": direction} if direction else {}))
        return [v[1] for s in r.json()["data"]["result"] for v in s["values"]]

    assert values("") == ["api error", "api info 4"]  # backward by default
    assert values("forward") == ["api info 0", "api info 1"]


def test_query_range_merges_metadata_into_stream_labels_unless_categorized(filled, client):
    params = {"query": '{level="error"}', "start": str(NOW_NS), "end": str(NOW_NS + 60 * SEC)}
    [plain] = client.get("/loki/api/v1/query_range", params=params).json()["data"]["result"]
    assert plain["stream"] == {"level": "error", "service": "api", "trace_id": "t1"}
    flags = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}
    [split] = client.get("/loki/api/v1/query_range", params=params, headers=flags).json()["data"]["result"]
    assert split["stream"] == {"level": "error", "service": "api"}
    assert split["values"] == [[str(NOW_NS + 10 * SEC), "api error", {"structuredMetadata": {"trace_id": "t1"}}]]


def test_query_needs_a_non_empty_matcher(filled, client):
    r = client.get("/loki/api/v1/query_range", params={"query": '{service=~".*"}'})
    assert r.status_code == 400
    assert r.text.startswith("queries require at least one regexp or equality matcher")


def test_entries_become_visible_after_the_visibility_delay():
    with LokiServer(visibility_delay_secs=0.5) as server, http(server.url) as c:
        now = time.time_ns()
        c.post(PUSH, content=body((API, [entry(now, "soon")])))
        params = {"query": '{service="api"}', "start": str(now), "end": str(now + SEC)}
        assert c.get("/loki/api/v1/query_range", params=params).json()["data"]["result"] == []
        time.sleep(0.55)
        [stream] = c.get("/loki/api/v1/query_range", params=params).json()["data"]["result"]
        assert stream["values"] == [[str(now), "soon"]]
        assert c.get("/loki/api/v1/query_range", params={"query": '{service="api"}'}).json()["data"]["result"]


def test_labels_and_label_values(filled, client):
    window = {"start": str(NOW_NS), "end": str(NOW_NS + 60 * SEC)}
    labels = client.get("/loki/api/v1/labels", params=window).json()
    assert labels == {"status": "success", "data": ["level", "service"]}
    r = client.get("/loki/api/v1/label/service/values", params=window)
    assert r.json()["data"] == ["api", "worker"]


# plumbing


def test_protobuf_snappy_push_is_accepted(loki, client):
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload

    timestamp = bytes([1 << 3]) + _varint(NOW_NS // SEC) + bytes([2 << 3]) + _varint(NOW_NS % SEC)
    pb_entry = field(1, timestamp) + field(2, b"from protobuf") + field(3, field(1, b"trace_id") + field(2, b"t9"))
    request = field(1, field(1, b'{service="api", level="info"}') + field(2, pb_entry))
    snappy = _varint(len(request)) + bytes([61 << 2]) + (len(request) - 1).to_bytes(2, "little") + request
    r = push(client, snappy, **{"Content-Type": "application/x-protobuf"})
    assert r.status_code == 204, r.text
    [stored] = loki.entries()
    assert (dict(stored.labels), stored.ts_ns, stored.line, dict(stored.metadata)) == (
        API,
        NOW_NS,
        "from protobuf",
        {"trace_id": "t9"},
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def test_concurrent_pushes_are_all_stored_and_logged(loki):
    def pusher(worker: int) -> None:
        with http() as c:
            for i in range(25):
                labels = {"service": f"w{worker}"}
                assert c.post(loki.url + PUSH, content=body((labels, [entry(NOW_NS + i, f"{i}")]))).status_code == 204

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loki.wait_for(200)
    assert len({e.push_seq for e in loki.entries()}) == 200
    assert len(loki.pushes()) == 200


def test_count_only_mode_keeps_counters_and_duplicates_not_entries():
    with LokiServer(keep_records=False) as server, http(server.url) as c:
        payload = body((API, [entry(time.time_ns(), "x")]))
        assert [c.post(PUSH, content=payload).status_code for _ in range(2)] == [204, 204]
        assert server.entries() == []
        assert (server.stats()["entries"], server.stats()["duplicates"]) == (2, 1)


def test_wait_for_times_out_with_a_summary(loki):
    with pytest.raises(TimeoutError, match="0 stored"):
        loki.wait_for(1, timeout=0.1)


@given(st.binary(max_size=300), st.sampled_from(["application/json", "application/x-protobuf"]), st.booleans())
@settings(max_examples=300, deadline=None)
def test_decoding_hostile_bytes_only_ever_refuses_like_loki(data, content_type, gzipped):
    try:
        loki_wire.decode_body(content_type, "gzip" if gzipped else None, data, None)
    except loki_wire.PushError as exc:
        assert exc.status == 400


def test_cli_serves_until_sigterm_and_writes_a_summary(tmp_path: Path):
    stats = tmp_path / "stats.json"
    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "tests.support.lokiserver", "--port", "0", "--visibility-delay", "0"]
    with subprocess.Popen([*args, "--stats-file", str(stats)], cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        url = proc.stdout.readline().split()[-1]
        with http() as c:
            payload = body((API, [entry(time.time_ns(), "cli")]))
            assert c.post(url + PUSH, content=payload).status_code == 204
            assert c.post(url + PUSH, content=payload).status_code == 204
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "2 entries stored, 1 duplicates, 0 rejected" in out
    assert orjson.loads(stats.read_bytes())["duplicates"] == 1


def test_ingestion_rate_limit_refuses_a_push_whole_until_the_bucket_refills():
    # ingestion_rate_mb / ingestion_burst_size_mb: a token bucket per tenant in bytes of lines and metadata.
    with LokiServer(visibility_delay_secs=0, clock=lambda: NOW_S, ingestion_rate_mb=0.5,
                    ingestion_burst_size_mb=0.25) as loki, http(loki.url) as client:  # fmt: skip
        line = "x" * 100_000
        assert push(client, body((API, [entry(NOW_NS, line), entry(NOW_NS + 1, line)]))).status_code == 204
        r = push(client, body((API, [entry(NOW_NS + 2, line, {"trace_id": "ab"})])))
        assert r.status_code == 429
        assert r.text == (
            "Ingestion rate limit exceeded for user fake (limit: 524288 bytes/sec) while attempting to ingest '1' "
            "lines totaling '100010' bytes, reduce log volume or contact your Loki administrator to see if the "
            "limit can be increased\n"
        )
        assert len(loki.entries()) == 2, "a refused push stores nothing"
        # Another tenant has its own bucket; a push larger than the burst never fits.
        assert push(client, body((API, [entry(NOW_NS, line)])), **{"X-Scope-OrgID": "other"}).status_code == 204
        assert push(client, body((API, [entry(NOW_NS, "y" * 300_000)])), **{"X-Scope-OrgID": "big"}).status_code == 429
        time.sleep(0.2)  # 0.5 MiB/s refills ~100 KiB
        assert push(client, body((API, [entry(NOW_NS + 3, line)]))).status_code == 204
