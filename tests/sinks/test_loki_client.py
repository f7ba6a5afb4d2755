"""The Loki client and push encoding, with replies scripted by httpx.MockTransport."""

from __future__ import annotations

import gc
import gzip
import os
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import orjson
import pytest

from logpipe.config import LokiConfig
from logpipe.sinks.loki import LokiClient, LokiUnavailable, base_url, classify, parse_retry_after, rejected_reasons
from logpipe.sinks.push import encode, line_hash, selector
from tests.support.lokiserver import LokiServer

API = (("container", "docker-api-1"), ("level", "info"), ("service", "api"))
WORKER = (("container", "docker-worker-1"), ("level", "error"), ("service", "worker"))
NOW = 1_800_000_000 * 10**9

# Loki's answer to a push with one entry outside the out-of-order window (loki-push.md)
PARTIAL_400 = (
    "entry with timestamp 2026-11-23 16:03:09.818373504 +0000 UTC ignored, reason: 'entry too far behind, "
    "entry timestamp is: 2026-11-23T16:03:09Z, oldest acceptable timestamp is: 2026-11-23T18:03:09Z',\n"
    'user \'fake\', total ignored: 1 out of 3 for stream: {level="info", service="api"}\n'
)


def decode(body: bytes) -> dict:
    return orjson.loads(gzip.decompress(body))


class TestEncode:
    def test_one_stream_per_label_set_sorted_with_metadata(self) -> None:
        entries = [
            (NOW + 3, "c", None, API, (3, 1), 10),
            (NOW + 1, "a", {"trace_id": "6f0b"}, API, (1, 1), 10),
            (NOW + 2, "w", None, WORKER, (2, 1), 10),
        ]
        pushed = encode(
            entries, now_ns=NOW, max_age_ns=3600 * 10**9, too_old="drop", structured_metadata=True, gzip_level=1
        )
        streams = {tuple(sorted(s["stream"].items())): s["values"] for s in decode(pushed.body)["streams"]}
        assert streams[API] == [[str(NOW + 1), "a", {"trace_id": "6f0b"}], [str(NOW + 3), "c"]]
        assert streams[WORKER] == [[str(NOW + 2), "w"]]
        assert pushed.entries == 3

    def test_metadata_off_sends_two_element_values(self) -> None:
        pushed = encode(
            [(NOW, "a", {"trace_id": "x"}, API, (1, 1), 10)],
            now_ns=NOW,
            max_age_ns=10**12,
            too_old="drop",
            structured_metadata=False,
            gzip_level=1,
        )
        assert decode(pushed.body)["streams"][0]["values"] == [[str(NOW), "a"]]

    def test_too_old_entries_are_retimestamped_in_order_or_dropped(self) -> None:
        old = [(NOW - 7200 * 10**9 + i, f"old{i}", None, API, (i, 1), 10) for i in range(3)]
        new = [(NOW, "new", None, API, (9, 1), 10)]
        kept = encode(
            old + new,
            now_ns=NOW,
            max_age_ns=3000 * 10**9,
            too_old="retimestamp",
            structured_metadata=True,
            gzip_level=1,
        )
        values = decode(kept.body)["streams"][0]["values"]
        assert [v[1] for v in values] == ["old0", "old1", "old2", "new"]
        assert [int(v[0]) for v in values[:3]] == [NOW - 3000 * 10**9 + i for i in range(3)]
        assert values[0][2] == {"original_ts": str(NOW - 7200 * 10**9)}
        assert kept.retimestamped == 3
        dropped = encode(
            old + new, now_ns=NOW, max_age_ns=3000 * 10**9, too_old="drop", structured_metadata=True, gzip_level=1
        )
        assert dropped.too_old_dropped == 3 and dropped.entries == 1

    def test_probes_name_the_last_entry_of_streams(self) -> None:
        pushed = encode(
            [(NOW, "a", None, API, (1, 1), 1), (NOW + 1, "b", None, API, (2, 1), 1)],
            now_ns=NOW,
            max_age_ns=10**12,
            too_old="drop",
            structured_metadata=True,
            gzip_level=1,
        )
        assert [(p.labels, p.ts_ns, p.line_hash) for p in pushed.probes] == [(dict(API), NOW + 1, line_hash("b"))]

    def test_selector_escapes_values(self) -> None:
        assert selector({"b": 'x"y', "a": "c\\d"}) == '{a="c\\\\d", b="x\\"y"}'


class TestClassify:
    @pytest.mark.parametrize("status", [200, 204])
    def test_success(self, status: int) -> None:
        assert classify(status, "", None).outcome == "ok"

    def test_partial_400_is_final_and_counted(self) -> None:
        result = classify(400, PARTIAL_400, None)
        assert result.outcome == "rejected"
        assert result.rejected == {"too_far_behind": 1}

    def test_400_for_the_whole_request(self) -> None:
        result = classify(400, "couldn't parse labels: 1:9: parse error: unexpected character inside braces: '-'", None)
        assert result.rejected == {"invalid_labels": -1}

    def test_413_splits(self) -> None:
        assert classify(413, "request body too large", None).outcome == "too_large"

    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 401, 403, 404])
    def test_everything_else_is_retried(self, status: int) -> None:
        assert classify(status, "Ingestion rate limit exceeded", "3").outcome == "retry"

    def test_retry_after_seconds_and_http_date(self) -> None:
        assert parse_retry_after("7") == 7.0
        assert parse_retry_after(None) is None
        assert parse_retry_after("soon") is None
        in_ten = parse_retry_after(formatdate(time.time() + 10, usegmt=True))
        assert in_ten is not None and 8.0 <= in_ten <= 10.5

    def test_many_streams_and_reasons(self) -> None:
        body = PARTIAL_400 + (
            "entry with timestamp 2030-01-01 00:00:00 +0000 UTC ignored, reason: 'entry for stream ... has "
            "timestamp too new: 2030-01-01T00:00:00Z',\n"
            "user 'fake', total ignored: 4 out of 4 for stream: {service=\"worker\"}\n"
        )
        assert rejected_reasons(body) == {"too_far_behind": 1, "too_new": 4}


class TestClient:
    def test_push_sends_gzip_json_with_tenant_and_basic_auth(self) -> None:
        seen: list[httpx.Request] = []

        def reply(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(204)

        config = LokiConfig(url="http://loki:3100/loki/api/v1/push", tenant="team-a", username="u", password="p")
        client = LokiClient(config, transport=httpx.MockTransport(reply))
        assert client.push(gzip.compress(b'{"streams":[]}')).outcome == "ok"
        request = seen[0]
        assert str(request.url) == "http://loki:3100/loki/api/v1/push"
        assert request.headers["X-Scope-OrgID"] == "team-a"
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.headers["Authorization"].startswith("Basic ")

    def test_bearer_token_file_is_reread_when_rotated(self, tmp_path: Path) -> None:
        token = tmp_path / "token"
        token.write_text("first\n")
        seen: list[str] = []
        client = LokiClient(
            LokiConfig(bearer_token_file=str(token)),
            transport=httpx.MockTransport(lambda r: (seen.append(r.headers["Authorization"]), httpx.Response(204))[1]),
        )
        client.push(b"")
        token.write_text("second\n")
        os.utime(token, (time.time() + 5, time.time() + 5))
        client.push(b"")
        assert seen == ["Bearer first", "Bearer second"]

    def test_network_error_is_a_retry_not_an_exception(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        result = LokiClient(LokiConfig(), transport=httpx.MockTransport(refuse)).push(b"x")
        assert (result.outcome, result.status) == ("retry", 0)
        assert "ConnectError" in result.message

    def test_query_range_reads_loki_streams(self) -> None:
        def reply(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/loki/api/v1/query_range"
            assert request.url.params["direction"] == "forward"
            body = {
                "status": "success",
                "data": {
                    "resultType": "streams",
                    "result": [{"stream": {"service": "api"}, "values": [["5", "a"], ["6", "b"]]}],
                },
            }
            return httpx.Response(200, content=orjson.dumps(body))

        client = LokiClient(LokiConfig(), transport=httpx.MockTransport(reply))
        assert client.query_range('{service="api"}', 5, 7) == [(5, "a"), (6, "b")]

    def test_query_failure_raises(self) -> None:
        client = LokiClient(LokiConfig(), transport=httpx.MockTransport(lambda r: httpx.Response(502)))
        with pytest.raises(LokiUnavailable):
            client.query_range('{a="b"}', 0, 1)

    def test_base_url(self) -> None:
        assert base_url("http://loki:3100/") == "http://loki:3100"
        assert base_url("https://x/loki/api/v1/push") == "https://x"


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
def test_every_gzip_level_gives_a_standard_gzip_body(level: int) -> None:
    # Levels 1-3 go through ISA-L when it is installed, the others through zlib: Loki reads both as gzip.
    labels = (("service", "api"),)
    entries = [(NOW + i, f"line {i} " + "x" * i, None, labels, (NOW + i, 1), 80) for i in range(500)]
    pushed = encode(entries, now_ns=NOW, max_age_ns=10**18, too_old="drop", structured_metadata=True, gzip_level=level)
    values = orjson.loads(gzip.decompress(pushed.body))["streams"][0]["values"]
    assert [v[1] for v in values] == [e[1] for e in entries]


def test_every_reason_loki_gives_for_refusing_entries_is_exported_from_the_start() -> None:
    # A dashboard panel or an increase() alert on a reason that has never happened reads 0, not "No data".
    from logpipe.sinks.loki import _REASONS  # noqa: PLC0415
    from logpipe.telemetry import LOST_DROPS  # noqa: PLC0415

    assert {reason for _, reason in _REASONS} | {"rejected"} <= set(LOST_DROPS)


def test_a_push_body_is_freed_when_the_push_returns_not_at_the_next_full_collection() -> None:
    # logpipe runs the cyclic garbage collector rarely (tune_gc). httpx's Response and its body stream refer to each
    # other, so every response, with its request and the push body, used to wait for a full collection: peak RSS
    # on a 1 M-line backlog was 105-123 MiB, half of it push bodies. With the cycle broken, reference counting
    # frees them when the push returns. (With the collector off, what a cycle holds stays in gc.get_objects().)
    pushes = 20
    with LokiServer(visibility_delay_secs=0.0, keep_records=False) as loki:
        client = LokiClient(LokiConfig(url=loki.url))
        client.push(gzip.compress(b'{"streams":[]}'))  # the connection, its buffers and the lazy imports
        gc.collect()
        gc.disable()
        try:
            for i in range(pushes):
                now = time.time_ns()
                # Random hex: the body stays about half the lines' size; each line under Loki's 256 KB limit.
                values = [[str(now + k), os.urandom(100_000).hex()] for k in range(3)]
                payload = orjson.dumps({"streams": [{"stream": {"job": "t", "n": str(i)}, "values": values}]})
                assert client.push(gzip.compress(payload, 1)).outcome == "ok"
            waiting = [o for o in gc.get_objects() if isinstance(o, httpx.Response | httpx.Request)]
        finally:
            gc.enable()
            client.close()
    assert waiting == [], f"{len(waiting)} responses and requests of {pushes} pushes wait for the cyclic collector"
