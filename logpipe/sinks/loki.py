"""Talking HTTP to Loki: push, read back, readiness. httpx errors become logpipe outcomes here, in one place.

Status semantics follow what a real Loki answers (see loki-push.md): 2xx acknowledged; 400 is final — Loki
stored the valid entries and names the ignored ones, so retrying would duplicate them; 413 means split; 429,
5xx and network errors are retried with backoff, honouring Retry-After. Any other answer (401, 403, 404: a
configuration problem) is retried too, slowly and loudly, because dropping the data would be worse.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from logpipe import __version__
from logpipe.config import LokiConfig

PUSH_PATH = "/loki/api/v1/push"

_IGNORED = re.compile(r"total ignored: (\d+) out of \d+")
_REASONS = (
    ("too far behind", "too_far_behind"),
    ("too new", "too_new"),
    ("too old", "too_old"),
    ("line too long", "line_too_long"),
    ("max line size", "line_too_long"),
    ("structured metadata", "metadata_invalid"),
    ("label", "invalid_labels"),
    ("rate limit", "loki_rate_limited"),
    ("stream limit", "stream_limit"),
)


class LokiUnavailable(Exception):
    """A query to Loki failed (network, or a non-2xx answer). `permanent`: asking again will not help (a 4xx
    other than 429, such as credentials that may push but not query)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: str  # "ok" | "rejected" | "retry" | "too_large" | "unresolved" (may be stored; logpipe is stopping)
    status: int  # 0 when there was no answer
    retry_after: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> entries Loki ignored (outcome "rejected")
    message: str = ""
    ambiguous: bool = False  # the request reached Loki but no answer came back: it may have been stored


def base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len(PUSH_PATH)] if url.endswith(PUSH_PATH) else url


class LokiClient:
    """One Loki endpoint. Thread-safe (httpx.Client pools connections)."""

    def __init__(self, config: LokiConfig, transport: httpx.BaseTransport | None = None) -> None:
        self._config = config
        self._bearer_file = Path(config.bearer_token_file) if config.bearer_token_file else None
        self._bearer = config.bearer_token
        self._bearer_mtime = 0.0
        headers = {"User-Agent": f"logpipe/{__version__}"}
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        auth: httpx.Auth | None = None
        if config.username:
            password = config.password
            if config.password_file:
                password = Path(config.password_file).read_text(encoding="utf-8").strip()
            auth = httpx.BasicAuth(config.username, password)
        self._client = httpx.Client(
            base_url=base_url(config.url),
            headers=headers,
            auth=auth,
            timeout=config.timeout_secs,
            verify=_tls_context(config),
            transport=transport,
            limits=httpx.Limits(max_connections=config.max_concurrent_pushes + 2),
        )

    def push(self, body: bytes) -> PushResult:
        """Send one gzip-compressed JSON push body. Never raises."""
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **self._auth_header()}
        try:
            response = self._client.post(PUSH_PATH, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError) as exc:
            return PushResult("retry", 0, message=f"{type(exc).__name__}: {exc}")  # Loki never saw a whole request
        except httpx.HTTPError as exc:
            return PushResult("retry", 0, message=f"{type(exc).__name__}: {exc}", ambiguous=True)
        result = classify(response.status_code, response.text, response.headers.get("Retry-After"))
        _release(response)
        return result

    def query_range(self, query: str, start_ns: int, end_ns: int, limit: int = 100) -> list[tuple[int, str]]:
        """Entries matching a LogQL query in [start_ns, end_ns), oldest first. Raises LokiUnavailable."""
        params: dict[str, str | int] = {
            "query": query,
            "start": start_ns,
            "end": end_ns,
            "limit": limit,
            "direction": "forward",
        }
        try:
            response = self._client.get("/loki/api/v1/query_range", params=params, headers=self._auth_header())
        except httpx.HTTPError as exc:
            raise LokiUnavailable(f"{type(exc).__name__}: {exc}") from exc
        _release(response)
        if response.status_code != 200:
            permanent = 400 <= response.status_code < 500 and response.status_code != 429
            raise LokiUnavailable(f"query answered {response.status_code}: {response.text[:200]}", permanent)
        try:
            data: Any = orjson.loads(response.content)
            return [(int(v[0]), str(v[1])) for s in data["data"]["result"] for v in s["values"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise LokiUnavailable(f"unexpected query answer: {exc}") from exc

    def ready(self) -> bool:
        try:
            response = self._client.get("/ready", headers=self._auth_header())
        except httpx.HTTPError:
            return False
        _release(response)
        return response.status_code == 200

    def close(self) -> None:
        self._client.close()

    def _auth_header(self) -> dict[str, str]:
        if self._bearer_file is not None:
            try:
                mtime = self._bearer_file.stat().st_mtime
                if mtime != self._bearer_mtime:  # tokens are rotated by replacing the file
                    self._bearer = self._bearer_file.read_text(encoding="utf-8").strip()
                    self._bearer_mtime = mtime
            except OSError:
                pass
        return {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}


def classify(status: int, text: str, retry_after: str | None) -> PushResult:
    """What a Loki answer means for the batch."""
    message = text[:300].strip()
    if 200 <= status < 300:
        return PushResult("ok", status)
    if status in (400, 422):
        return PushResult("rejected", status, rejected=rejected_reasons(text), message=message)
    if status == 413:
        return PushResult("too_large", status, message=message)
    return PushResult("retry", status, retry_after=parse_retry_after(retry_after), message=message)


def rejected_reasons(text: str) -> dict[str, int]:
    """Entries Loki ignored, by reason, from its plain-text 400 body; {reason: -1} when it gives no count.

    Loki lists ignored entries as `... ignored, reason: '<why>',` lines, then one
    `user '<tenant>', total ignored: N out of M for stream: {...}` line per stream.
    """
    counts: dict[str, int] = {}
    listed: list[str] = []
    found = False
    for line in text.splitlines():
        match = _IGNORED.search(line)
        if match:
            found = True
            total = int(match.group(1))
            reasons = listed or ["rejected"]
            for reason in reasons[:total]:
                counts[reason] = counts.get(reason, 0) + 1
            if total > len(reasons):  # Loki lists only some entries: the rest share the first reason
                counts[reasons[0]] = counts.get(reasons[0], 0) + total - len(reasons)
            listed = []
        elif "reason:" in line:
            listed.append(_reason(line.split("reason:", 1)[1]))
    if not found:
        counts[_reason(text)] = -1
    return counts


def _reason(text: str) -> str:
    lowered = text.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return "rejected"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _tls_context(config: LokiConfig) -> ssl.SSLContext | bool:
    if config.tls_insecure_skip_verify:
        return False
    context = ssl.create_default_context(cafile=config.ca_file or None)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file or None)
    return context


def _release(response: httpx.Response) -> None:
    """Let a read response (with its request and the push body) be freed as soon as it is dropped.

    httpx's Response and the stream it wraps its body in refer to each other, so a response is freed only by the
    cyclic garbage collector, which logpipe runs rarely (`tune_gc`): every push body sent waited for it, about
    60 MiB per million lines shipped, released in one go at the next full collection. The body is read by now.
    """
    response.stream = httpx.ByteStream(b"")
