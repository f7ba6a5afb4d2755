"""How fast `Redactor.redact` is on a realistic mix of Dify lines.

Run with ``python -m bench.redact_bench``. The mix: the lines a Dify stack prints (api/worker text and JSON,
plugin daemon logfmt and JSON, sandbox, nginx, gorm, Celery, gunicorn, the DEBUG usage line), about 1 % of them
carrying one secret (an API key, a Bearer header, a URL or logfmt password, a JSON secret field). Reports the mean
nanoseconds per line over the mix, over the clean lines alone (and over those of 180-220 bytes) and per line kind,
each the best of several rounds, with `str.lower()` of the same lines as a yardstick for the machine.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Callable

from logpipe.config import RedactConfig
from logpipe.redact import Redactor

ALNUM = string.ascii_letters + string.digits
TENANT = "7c75135d-52f5-4e24-b5f3-6f69dcb64461"
#: The clean line kinds below, with their share (in %), roughly an INFO-level stack under load: the httpx and
#: plugin-daemon request lines dominate; the DEBUG usage line, gorm and postgres lines are rare.
KINDS = ("api_httpx", "celery", "api_json", "plugin_text", "plugin_json", "sandbox", "nginx", "gorm", "gunicorn")
KINDS += ("usage_debug", "postgres")
WEIGHTS = (24, 8, 10, 20, 8, 5, 19, 2, 2, 1, 1)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def clean_line(rng: random.Random) -> tuple[str, str]:
    trace, ts = _hex(rng, 32), f"2026-06-12 10:{rng.randint(10, 59)}:{rng.randint(10, 59)}.{rng.randint(100, 999)}"
    lines = (
        f"{ts} INFO [Dummy-14] [_client.py:1025] {trace} - HTTP Request: POST "
        f'http://plugin_daemon:5002/plugin/{TENANT}/dispatch/llm/invoke "HTTP/1.1 200 OK"',
        f"{ts} INFO [MainThread] [strategy.py:161]  - Task tasks.document_indexing_task[{_hex(rng, 8)}-"
        f"{_hex(rng, 4)}-4e24-b5f3-{_hex(rng, 12)}] received",
        f'{{"ts":"2026-06-12T10:38:00.912Z","severity":"INFO","service":"langgenius/dify","caller":"app.py:88",'
        f'"message":"Task tasks.mail_task.send_mail_task[{_hex(rng, 8)}] succeeded in 0.41s: None",'
        f'"trace_id":"{trace}"}}',
        f"2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 trace_id={trace} "
        f"tenant_id={TENANT} HTTP request status=200 latency_ms={rng.randint(5, 9000)} client_ip=172.25.0.9 "
        f"method=POST path=/plugin/{TENANT}/dispatch/llm/invoke",
        f'{{"attributes":{{"client_ip":"172.25.0.9","latency_ms":{rng.randint(5, 9000)},"method":"POST",'
        f'"status":200}},"caller":"middleware.go:83","message":"HTTP request","service":"dify-plugin-daemon",'
        f'"severity":"INFO","span_id":"{_hex(rng, 16)}","trace_id":"{trace}"}}',
        f'{{"time":"2026-06-12T10:33:00.402118Z","level":"INFO","msg":"request finished","trace_id":"{trace}",'
        f'"span_id":"{_hex(rng, 16)}","tenant_id":"","user_id":"","user_type":""}}',
        f'172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 '
        f'{rng.randint(100, 9000)} "-" "python-requests/2.32.3" "-"',
        f'[{rng.random():.3f}ms] [rows:1] SELECT * FROM "plugin_declarations" WHERE plugin_unique_identifier '
        f"= 'langgenius/openai:0.2.6@{_hex(rng, 16)}' LIMIT 1",
        f"[2026-06-12 10:40:13 +0000] [{rng.randint(2, 99)}] [INFO] Booting worker with pid: {rng.randint(2, 99)}",
        "Usage: prompt_tokens=812 prompt_unit_price=Decimal('0.15') completion_tokens=96 total_tokens=908 "
        "total_price=Decimal('0.0001794') currency='USD' latency=1.912 time_to_first_token=0.41",
        f"2026-06-12 10:40:01.456 UTC [{rng.randint(50, 99)}] ERROR:  duplicate key value violates unique "
        f'constraint "tenant_account_joins_pkey"',
    )
    index = rng.choices(range(len(lines)), WEIGHTS)[0]
    return KINDS[index], lines[index]


def secret_line(rng: random.Random) -> str:
    key = "".join(rng.choice(ALNUM) for _ in range(24))
    return rng.choice(
        (
            f"2026-06-12 10:32:01.117 INFO [Dummy-3] [app.py:12] - curl -H 'Authorization: Bearer app-{key}'",
            f"2026-06-12 10:32:01.117 ERROR [Dummy-3] [llm.py:88] - invalid api key sk-proj-{key}{key}",
            f"2026-06-12 10:32:01.117 INFO [MainThread] [ext_database.py:20] - connect "
            f"postgresql://postgres:{key}@db:5432/dify",
            f'2026-06-12T10:32:40.3001Z ERROR dify-plugin-daemon generic.go:141 msg="auth" password="{key}"',
            f'{{"ts":"2026-06-12T10:38:00.912Z","severity":"INFO","message":"config","api_key":"{key}"}}',
        )
    )


def make_lines(n: int, secret_share: float = 0.01, seed: int = 1) -> list[tuple[str, str]]:
    """(kind, line) pairs; the kind of a line with a secret is "secret"."""
    rng = random.Random(seed)
    return [("secret", secret_line(rng)) if rng.random() < secret_share else clean_line(rng) for _ in range(n)]


def ns_per_line(redact: Callable[[str], str], lines: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for line in lines:
            redact(line)
        best = min(best, (time.perf_counter_ns() - start) / len(lines))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    redactor = Redactor(RedactConfig(), on_redact=lambda rule, count: None)
    corpus = make_lines(args.lines)
    lines = [line for _, line in corpus]
    clean = [line for kind, line in corpus if kind != "secret"]
    around_200 = [line for line in clean if 180 <= len(line.encode()) <= 220]
    assert all(redactor.redact(line) is line for line in clean), "a clean line was changed"
    mean_bytes = sum(len(line.encode()) for line in lines) / len(lines)

    def report(label: str, sample: list[str]) -> None:
        print(f"{label:18} {ns_per_line(redactor.redact, sample, args.rounds):7.0f} ns/line  ({len(sample)} lines)")

    print(f"{len(lines)} lines, mean {mean_bytes:.0f} bytes; best of {args.rounds} rounds")
    report("mix", lines)
    report("clean", clean)
    report("clean 180-220 B", around_200)
    for kind in (*KINDS, "secret"):
        report(f"  {kind}", [line for k, line in corpus if k == kind])
    print(
        f"reference: str.lower() of the 180-220 B lines {ns_per_line(str.lower, around_200, args.rounds):.0f} ns/line"
    )


if __name__ == "__main__":
    main()
