"""Redaction: every built-in rule catches its secrets and leaves Dify's ordinary lines alone (the same object)."""

from __future__ import annotations

import random
import re
import string
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe import redact as redact_module
from logpipe.config import RedactConfig, RedactRule
from logpipe.redact import BUILTIN_RULES, REDACTED, Redactor

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"


def dify_key(prefix: str = "app-", seed: int = 1) -> str:
    """A key as Dify makes one: ApiToken.generate_api_key(prefix, 24), random letters and digits."""
    rng = random.Random(seed)
    return prefix + "".join(rng.choice(ALNUM) for _ in range(24))


def random_key(prefix: str, alphabet: str, length: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


class Counted:
    """A Redactor with its on_redact calls recorded."""

    def __init__(self, config: RedactConfig | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.redactor = Redactor(config or RedactConfig(), on_redact=lambda rule, n: self.calls.append((rule, n)))

    def __call__(self, text: str) -> str:
        self.calls.clear()
        return self.redactor.redact(text)


@pytest.fixture
def redact() -> Counted:
    return Counted()


# Lines a Dify stack prints that hold no secret, including the traps: usage counts named *_tokens, task names with
# "password", URLs without a password, words that start like keys.
CLEAN_LINES = [
    "Usage: prompt_tokens=812 prompt_unit_price=Decimal('0.15') prompt_price_unit=Decimal('0.000001') "
    "prompt_price=Decimal('0.0001218') completion_tokens=96 completion_unit_price=Decimal('0.6') "
    "completion_price_unit=Decimal('0.000001') completion_price=Decimal('0.0000576') total_tokens=908 "
    "total_price=Decimal('0.0001794') currency='USD' latency=1.912 time_to_first_token=0.41 time_to_generate=1.5",
    "Parameters: {'temperature': 0.7, 'max_tokens': 512, 'top_p': 1} max_tokens=512 token_count=3 max_token=4096",
    '{"model":"gpt-4o","prompt_tokens":812,"completion_tokens":96,"total_tokens":908,"token_count":3,'
    '"time_to_first_token":0.41,"max_tokens":512}',
    "2026-06-12 10:32:01.117 INFO [Dummy-14] [_client.py:1025] 6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b - HTTP Request: "
    'POST http://plugin_daemon:5002/plugin/7c75135d-52f5-4e24-b5f3-6f69dcb64461/dispatch/llm/invoke "HTTP/1.1 200 OK"',
    "2026-06-12 10:32:01.117 INFO [MainThread] [strategy.py:161]  - Task "
    "tasks.mail_task.send_reset_password_mail_task[c14c96c2-52f5-4e24-b5f3-6f69dcb64461] received",
    "2026-06-12T10:32:40.3001Z ERROR dify-plugin-daemon generic.go:141 trace_id=6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b "
    "tenant_id=7c75135d plugin returned error response action=invoke_llm plugin=langgenius/openai:0.2.6@e266aa "
    'runtime_type=local error_type=InvokeConnectionError message="[models] Connection Error, Request timed out."',
    '{"attributes":{"client_ip":"172.25.0.9","latency_ms":2417,"method":"POST","path":"/plugin/7c75/dispatch/llm/'
    'invoke","status":200},"caller":"middleware.go:83","identity":{"tenant_id":"7c75"},"message":"HTTP request",'
    '"service":"dify-plugin-daemon","severity":"INFO","span_id":"51e2a9c0d8b7f6a5","trace_id":"6f0b"}',
    '[0.342ms] [rows:1] SELECT * FROM "api_tokens" WHERE "api_tokens"."type" = \'app\' AND "token" IS NOT NULL',
    '[0.342ms] [rows:0] INSERT INTO "accounts" ("name","password","password_salt") VALUES (\'a\',NULL,NULL)',
    '2026-06-12 10:40:01.456 UTC [88] FATAL:  password authentication failed for user "postgres"',
    '2026-06-12 10:40:01.456 UTC [88] ERROR:  duplicate key value violates unique constraint "api_tokens_pkey"',
    "2026/06/12 11:33:20 [error] 30#30: *902 upstream timed out (110: Connection timed out) while reading upstream, "
    'client: 10.0.0.5, request: "POST /v1/workflows/run HTTP/1.1", upstream: "http://172.18.0.6:5001/v1/workflows/run"',
    '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET /console/api/apps/05eaafb0/api-keys HTTP/1.1" 200 51 "-" "-"',
    "redis://redis:6379/0 amqp://rabbitmq:5672// https://user@example.com/path http://10.0.0.111:10002/v1/models",
    "pip install sk-learn scikit-learn; see app-config, dataset-id, ds-store, the app-review-queue and sk-style keys",
    'Invalid Bearer token; bearer authentication failed; WWW-Authenticate: Bearer realm="dify", error="x"',
    '{"token_type":"bearer","expires_in":3600,"password_set":true,"secret_name":"db","api_key_id":"k1"}',
    "api_key: None, token=null, password='' secret=\"\" password_file=/run/secrets/db",
    "Authorization header missing; authorization failed",
    '172.18.0.1 - - [12/Jun/2026:10:30:31 +0000] "GET /api/passport HTTP/1.1" 200 51 "-" "Mozilla/5.0"',
]


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_clean_lines_come_back_as_the_same_object(redact: Counted, line: str) -> None:
    assert redact(line) is line
    assert redact.calls == []


# --- bearer ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer [REDACTED]"),
        ("authorization: bearer eyJhbGciOi.x-y_z", "authorization: bearer [REDACTED]"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic [REDACTED]"),
        ("Authorization: token ghp_abcdef", "Authorization: token [REDACTED]"),
        ("Authorization: s3cr3t-raw-value", "Authorization: [REDACTED]"),
        (
            "headers={'Content-Type': 'application/json', 'Authorization': 'Bearer 0123456789abcdef'}",
            "headers={'Content-Type': 'application/json', 'Authorization': 'Bearer [REDACTED]'}",
        ),
        (
            "[(b'Host', b'api.example.com'), (b'Authorization', b'Basic dXNlcjpwYXNzd29yZA==')]",
            "[(b'Host', b'api.example.com'), (b'Authorization', b'Basic [REDACTED]')]",
        ),
        (
            'curl -H "Authorization: Bearer Xy9_abc.def" https://x',
            'curl -H "Authorization: Bearer [REDACTED]" https://x',
        ),
        ("retrying with Bearer 5f2b9c0e8d7a6b5c", "retrying with Bearer [REDACTED]"),
    ],
)
def test_bearer_redacts_the_credential_and_keeps_the_scheme(redact: Counted, line: str, expected: str) -> None:
    assert redact(line) == expected
    assert redact.calls == [("bearer", 1)]


def test_bearer_in_a_json_header_dump_keeps_the_json_valid(redact: Counted) -> None:
    line = '{"headers":{"authorization":"Bearer tok_9f8e7d6c5b4a","accept":"*/*"},"status":401}'
    out = redact(line)
    assert orjson.loads(out) == {"headers": {"authorization": "Bearer [REDACTED]", "accept": "*/*"}, "status": 401}
    assert redact.calls == [("bearer", 1)]


# --- dify_api_key --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["app-", "dataset-", "ds-"])
def test_dify_api_keys_keep_their_prefix(redact: Counted, prefix: str) -> None:
    key = dify_key(prefix)
    line = f"2026-06-12 10:32:01.117 WARNING [Dummy-3] [wraps.py:354] - Invalid API key {key}, rejected"
    assert redact(line) == line.replace(key, f"{prefix}{REDACTED}")
    assert redact.calls == [("dify_api_key", 1)]


def test_dify_api_key_in_a_gorm_or_sql_line(redact: Counted) -> None:
    key = dify_key("app-", seed=7)
    line = f"[0.342ms] [rows:1] SELECT * FROM \"api_tokens\" WHERE token = '{key}' AND type = 'app' LIMIT 1"
    out = redact(line)
    assert key not in out
    assert "token = 'app-[REDACTED]' AND type = 'app'" in out
    assert redact.calls == [("dify_api_key", 1)]  # the key rule labels it; kv_secret leaves the done value alone


@pytest.mark.parametrize(
    "word",
    [
        "app-config",
        "dataset-id",
        "webapp-" + "A1" * 12,  # glued to a word
        "app-" + "A1" * 12 + "b",  # 25 characters: not Dify's shape
        "app-" + "A1" * 11,  # 22 characters
        "records-" + "A1" * 12,
    ],
)
def test_dify_api_key_leaves_words_alone(redact: Counted, word: str) -> None:
    line = f"loaded {word} from cache"
    assert redact(line) is line


# --- openai_key ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        (random_key("sk-", ALNUM, 48), "sk-"),  # OpenAI legacy, Moonshot
        (random_key("sk-", "0123456789abcdef", 32), "sk-"),  # DeepSeek
        (random_key("sk-proj-", URLSAFE, 156), "sk-proj-"),
        (random_key("sk-svcacct-", URLSAFE, 120), "sk-svcacct-"),
        (random_key("sk-ant-api03-", URLSAFE, 93) + "AA", "sk-ant-api03-"),
        (random_key("sk-or-v1-", "0123456789abcdef", 64), "sk-or-v1-"),
        ("sk-lf-2b9c0e8d-7a6b-5c4d-3e2f-1a0b9c8d7e6f", "sk-lf-"),
        ("sk-" + "abcdefghijklmnopqrstuvwxyzabcdefgh", "sk-"),  # 34 lowercase letters: long enough on its own
    ],
)
def test_sk_keys_keep_their_provider_prefix(redact: Counted, key: str, kept: str) -> None:
    line = f'openai.AuthenticationError: Incorrect API key provided: {key}. (request "POST /v1/chat")'
    out = redact(line)
    assert out == f'openai.AuthenticationError: Incorrect API key provided: {kept}{REDACTED}. (request "POST /v1/chat")'
    assert redact.calls == [("openai_key", 1)]


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn",
        "sk-learn-compatible-wrapper",  # lowercase slug under 32 characters
        "task-3f2a9c1e8d7b6a5f4e3d2c1b0a9f8e7d",
        "disk-Usage1234567890abcdefghij",
        "sk-SK locale",
        "sk-" + "A1b" * 5,  # 15 characters
    ],
)
def test_sk_rule_leaves_words_alone(redact: Counted, text: str) -> None:
    line = f"note: {text} here"
    assert redact(line) is line


# --- jwt -------------------------------------------------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def test_jwt_keeps_the_header_only(redact: Counted) -> None:
    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    assert redact(f"refresh failed for {JWT} (expired)") == f"refresh failed for {header}.{REDACTED} (expired)"
    assert redact.calls == [("jwt", 1)]


def test_jwt_needs_a_json_header_and_payload(redact: Counted) -> None:
    line = "eyJhbGciOi alone, eyJhbGciOiJIUzI1NiJ9.bm90LWpzb24.c2ln and a.b.c"
    assert redact(line) is line


# --- url_password ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres:difyai123456@db:5432/dify", "postgresql://postgres:[REDACTED]@db:5432/dify"),
        ("postgresql+psycopg2://u:p%40ss@db/dify", "postgresql+psycopg2://u:[REDACTED]@db/dify"),
        ("redis://:difyai123456@redis:6379/1", "redis://:[REDACTED]@redis:6379/1"),
        ("amqp://guest:gu:est@rabbitmq:5672//", "amqp://guest:[REDACTED]@rabbitmq:5672//"),
        ("https://bob:hunter2@proxy.example.com:3128", "https://bob:[REDACTED]@proxy.example.com:3128"),
        ("mysql://root:p@ss@mysql/db", "mysql://root:[REDACTED]@mysql/db"),  # an unescaped @ in the password
    ],
)
def test_url_passwords(redact: Counted, url: str, expected: str) -> None:
    assert redact(f"connecting to {url} ...") == f"connecting to {expected} ..."
    assert redact.calls == [("url_password", 1)]


# --- kv_secret -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
        ("PASSWD: hunter2", "PASSWD: [REDACTED]"),
        ("DB_PASSWORD=difyai123456\nREDIS_PASSWORD=x", "DB_PASSWORD=[REDACTED]\nREDIS_PASSWORD=[REDACTED]"),
        ("secret=s3cr3t; client_secret='cs-1'", "secret=[REDACTED]; client_secret='[REDACTED]'"),
        ("api_key=abc123&apikey=def&x=1", "api_key=[REDACTED]&apikey=[REDACTED]&x=1"),
        ("X-Api-Key: 9f8e7d6c", "X-Api-Key: [REDACTED]"),
        ("GET /webapp/access?token=abc123xyz&app=1", "GET /webapp/access?token=[REDACTED]&app=1"),
        ("access_token=at.123 refresh_token: rt-9", "access_token=[REDACTED] refresh_token: [REDACTED]"),
        ('SECRET_KEY=sk-not-really OPENAI_API_KEY="quoted value"', 'SECRET_KEY=[REDACTED] OPENAI_API_KEY="[REDACTED]"'),
        ("Config(api_key='abc', timeout=30)", "Config(api_key='[REDACTED]', timeout=30)"),
        ("{'password': 'hunter2', 'user': 'bob'}", "{'password': '[REDACTED]', 'user': 'bob'}"),
        (
            "UPDATE accounts SET password = 'x1' WHERE id = 3",
            "UPDATE accounts SET password = '[REDACTED]' WHERE id = 3",
        ),
        ("token=123abc", "token=[REDACTED]"),  # not a number, so not a count
        ("passphrase=correct horse", "passphrase=[REDACTED] horse"),  # unquoted values end at a space
    ],
)
def test_kv_secret(redact: Counted, line: str, expected: str) -> None:
    assert redact(line) == expected
    assert [rule for rule, _ in redact.calls] == ["kv_secret"]


def test_kv_secret_in_a_plugin_daemon_line_with_go_quoting(redact: Counted) -> None:
    line = (
        "2026-06-12T10:32:40.3001Z ERROR dify-plugin-daemon generic.go:141 trace_id=6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b "
        'msg="credentials rejected" password="p@ss \\"w0rd\\" x" api_key=plain-key-1 status=401'
    )
    out = redact(line)
    assert out == (
        "2026-06-12T10:32:40.3001Z ERROR dify-plugin-daemon generic.go:141 trace_id=6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b "
        'msg="credentials rejected" password="[REDACTED]" api_key=[REDACTED] status=401'
    )
    assert redact.calls == [("kv_secret", 2)]


def test_kv_secret_leaves_number_tokens_but_not_number_passwords(redact: Counted) -> None:
    assert redact("max_token=512 first_token=0.41 token_count=9") == "max_token=512 first_token=0.41 token_count=9"
    assert redact("password=123456 pin_token=12ab") == "password=[REDACTED] pin_token=[REDACTED]"


# --- json_secret -----------------------------------------------------------------------------------------------------


def test_json_secret_keeps_a_dify_json_line_valid_and_the_rest_unchanged(redact: Counted) -> None:
    record = {
        "ts": "2026-06-12T10:38:00.912Z",
        "severity": "INFO",
        "service": "langgenius/dify",
        "caller": "provider_manager.py:120",
        "message": "validated credentials",
        "trace_id": "1f2e3d4c5b6a79880796a5b4c3d2e1f0",
        "identity": {"tenant_id": "7c75", "user_id": "u1", "user_type": "account"},
        "attributes": {
            "password": "hunter2",
            "api_key": 123456,
            "secret": {"kty": "oct", "k": ["a", {"b": "c"}]},
            "token": "t-1",
            "access_token": "at",
            "refresh_token": "rt",
            "Authorization": "Basic dXNlcjpwYXNz",
            "client_secret": "cs",
            "private_key": "-----BEGIN KEY-----\nAAAA\n-----END KEY-----",
            "openai_api_key": "not-a-real-key",
            "prompt_tokens": 812,
            "has_api_key": True,
            "token_expired": None,
            "password_hash": "kept",
            "empty_password": "",
            "refresh_token_null": None,
            "session_token": None,
        },
    }
    line = orjson.dumps(record).decode()
    out = redact(line)
    parsed = orjson.loads(out)
    attributes = parsed.pop("attributes")
    expected = dict(record)
    del expected["attributes"]
    assert parsed == expected
    redacted = ["password", "api_key", "secret", "token", "access_token", "refresh_token", "client_secret"]
    redacted += ["private_key", "openai_api_key"]
    assert {key: attributes[key] for key in redacted} == dict.fromkeys(redacted, REDACTED)
    assert attributes["Authorization"] == "Basic [REDACTED]"  # the bearer rule, which keeps the scheme
    assert attributes["prompt_tokens"] == 812
    assert attributes["has_api_key"] is True
    assert attributes["session_token"] is None
    assert attributes["password_hash"] == "kept"
    assert attributes["empty_password"] == ""
    assert dict(redact.calls) == {"bearer": 1, "json_secret": 9}


def test_json_secret_with_spaces_and_in_a_fragment(redact: Counted) -> None:
    line = 'PluginInvokeError: {"args": {"api_key": "abc", "model": "gpt-4o"}, "error_type": "InvokeAuthError"}'
    out = redact(line)
    assert out == (
        'PluginInvokeError: {"args": {"api_key": "[REDACTED]", "model": "gpt-4o"}, "error_type": "InvokeAuthError"}'
    )
    assert orjson.loads(out.removeprefix("PluginInvokeError: "))["args"]["model"] == "gpt-4o"


def test_json_secret_inside_a_json_string(redact: Counted) -> None:
    inner = orjson.dumps({"password": 'p"w\\d', "token": 5, "user": "bob"}).decode()
    line = orjson.dumps({"message": f"request body {inner}", "severity": "ERROR"}).decode()
    out = redact(line)
    message = orjson.loads(out)["message"]
    assert orjson.loads(message.removeprefix("request body ")) == {"password": REDACTED, "token": 5, "user": "bob"}
    assert redact.calls == [("json_secret", 1)]  # a number after "token" is a count


def test_json_keys_from_the_config(redact: Counted) -> None:
    counted = Counted(RedactConfig(json_keys=("session_cookie", "X-Custom")))
    line = '{"session_cookie":"abc","x-custom":[1,2],"cookie":"kept","my_session_cookie":"kept"}'
    assert orjson.loads(counted(line)) == {
        "session_cookie": REDACTED,
        "x-custom": REDACTED,
        "cookie": "kept",
        "my_session_cookie": "kept",
    }
    assert counted.calls == [("json_secret", 2)]


def test_a_value_cut_off_by_truncation_is_redacted_to_the_end_of_its_line(redact: Counted) -> None:
    assert redact('{"ts":"x","password":"hunter2-and-the-line-was-cut') == '{"ts":"x","password":"[REDACTED]'
    assert redact('msg="x" token="abc123\nnext line') == 'msg="x" token="[REDACTED]\nnext line'


def test_json_keys_beyond_ascii() -> None:
    counted = Counted(RedactConfig(json_keys=("Contraseña",)))
    assert counted('{"usuario":"ana","contraseña":"hola123"}') == '{"usuario":"ana","contraseña":"[REDACTED]"}'
    assert counted('{"CONTRASEñA":"hola123"}') == '{"CONTRASEñA":"[REDACTED]"}'  # case folds for ASCII letters


# --- custom rules, counts, modes ------------------------------------------------------------------------------------


def test_custom_rule_with_a_secret_group_replaces_only_that_group() -> None:
    counted = Counted(RedactConfig(rules=(RedactRule("phone", r"phone=(?P<secret>\+?[0-9 -]{7,})", "<phone>"),)))
    assert counted("user phone=+33 6 12 34 56 78 ok") == "user phone=<phone>ok"
    assert counted.calls == [("phone", 1)]


def test_custom_rule_without_a_group_replaces_the_whole_match_literally() -> None:
    rules = (RedactRule("ssn", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", r"\1 \g<0>"),)
    counted = Counted(RedactConfig(rules=rules))
    assert counted("ssn 123-45-6789 and 987-65-4321") == r"ssn \1 \g<0> and \1 \g<0>"
    assert counted.calls == [("ssn", 2)]


def test_custom_rule_that_can_match_nothing_only_counts_real_matches() -> None:
    counted = Counted(RedactConfig(rules=(RedactRule("pins", r"(?:pin=[0-9]+)?"),)))
    assert counted("a pin=1234 b pin=99") == "a [REDACTED] b [REDACTED]"
    assert counted.calls == [("pins", 2)]
    clean = "no pins"
    assert counted(clean) is clean


def test_custom_rules_run_after_the_builtins() -> None:
    rules = (RedactRule("after", r"password=\[REDACTED\]", "seen-redacted"),)
    counted = Counted(RedactConfig(rules=rules))
    assert counted("password=hunter2") == "seen-redacted"
    assert counted.calls == [("kv_secret", 1), ("after", 1)]


def test_on_redact_is_called_once_per_rule_with_its_count(redact: Counted) -> None:
    key = dify_key("app-")
    line = f"password=a secret=b {key} Authorization: Bearer c1d2e3f4g5h6 postgres://u:p@db/x"
    redact(line)
    assert sorted(redact.calls) == [("bearer", 1), ("dify_api_key", 1), ("kv_secret", 2), ("url_password", 1)]


def test_a_failing_counter_does_not_stop_redaction() -> None:
    def broken(rule: str, count: int) -> None:
        raise RuntimeError("registry gone")

    redactor = Redactor(RedactConfig(), on_redact=broken)
    assert redactor.redact("password=hunter2") == "password=[REDACTED]"


def test_disabled_returns_the_input_untouched() -> None:
    redactor = Redactor(RedactConfig(enabled=False, rules=(RedactRule("all", ".+"),)))
    line = f"password=hunter2 {dify_key()}"
    assert redactor.redact(line) is line


def test_builtins_off_keeps_only_the_custom_rules() -> None:
    config = RedactConfig(
        builtin_rules=False, json_keys=("password",), rules=(RedactRule("pin", r"pin=(?P<secret>\d+)"),)
    )
    counted = Counted(config)
    line = '{"password":"hunter2"} password=hunter2 pin=1234'
    assert counted(line) == '{"password":"hunter2"} password=hunter2 pin=[REDACTED]'
    assert counted.calls == [("pin", 1)]
    clean = "nothing here"
    assert counted(clean) is clean


def test_a_failing_rule_replaces_the_whole_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object) -> list[object]:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(redact_module, "_matches", explode)
    assert Redactor(RedactConfig()).redact("password=hunter2") == "[REDACTED] (redaction failed)"


def test_positions_hold_with_non_ascii_text(redact: Counted) -> None:
    # "İ".lower() is two characters; the redactor lowers ASCII only, so positions do not move.
    line = "İİİ ünïcödé password=hunter2 ✓ Authorization: Bearer Zx9_abcdefgh"
    assert redact(line) == "İİİ ünïcödé password=[REDACTED] ✓ Authorization: Bearer [REDACTED]"


def test_builtin_rules_are_documented_and_labelled() -> None:
    names = [rule.name for rule in BUILTIN_RULES]
    assert names == ["dify_api_key", "openai_key", "jwt", "bearer", "url_password", "json_secret", "kv_secret"]
    for rule in BUILTIN_RULES:
        assert re.fullmatch(r"[a-z_]+", rule.name)
        assert rule.replacement == REDACTED
        assert "secret" in re.compile(rule.pattern).groupindex or rule.name == "json_secret"


# --- hostile input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sk-" * 20_000,
        'token="' * 10_000,
        '"token":{' * 10_000,
        '"password":"' + "a" * 60_000,
        "Bearer " * 10_000,
        "://a:" * 10_000,
        "eyJ" * 20_000,
        "key" * 20_000,
        "a" * 60_000 + "password=",
    ],
)
def test_hostile_input_stays_fast(redact: Counted, text: str) -> None:
    start = time.process_time()
    out = redact(text)
    assert redact(out) == out
    assert time.process_time() - start < 5.0


# --- properties -------------------------------------------------------------------------------------------------

# Pieces of secret-looking syntax, space-separated; hypothesis glues them with random text.
PIECES = (
    "password Password passwd PASSPHRASE passport secret token tokens api_key apikey X-Api-Key key authorization "
    "Authorization Bearer bearer Basic :// @ : = \" ' \\ , ; & { } [ ] ( ) - _ . 0 42 abc XYZ None [REDACTED] "
    "sk- app- ds- dataset- eyJ eyJhbGciOiJIUzI1NiJ9. sk-proj- İ é"
)
FRAGMENTS = [*PIECES.split(), " ", "\n", '\\"']
SEPARATORS = [" ", "\n", "\t", '"', "'", "=", ":", ",", ";", "(", ")", "/", "{", "}", "[", "]", "<", ">", "|"]

texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join)
dify_keys = st.tuples(
    st.sampled_from(["app-", "dataset-", "ds-"]), st.text(alphabet=ALNUM, min_size=24, max_size=24)
).map("".join)
sk_keys = st.one_of(
    st.text(alphabet=ALNUM, min_size=48, max_size=48).map("sk-".__add__),
    st.text(alphabet=URLSAFE, min_size=40, max_size=160).map("sk-proj-".__add__),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_redact_never_raises_and_is_idempotent(text: str) -> None:
    redactor = Redactor(RedactConfig())
    once = redactor.redact(text)
    assert isinstance(once, str)
    assert redactor.redact(once) == once


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=texts,
    after=texts,
    key=dify_keys | sk_keys,
    left=st.sampled_from(SEPARATORS),
    right=st.sampled_from(SEPARATORS),
)
def test_a_generated_key_never_survives(before: str, after: str, key: str, left: str, right: str) -> None:
    out = Redactor(RedactConfig()).redact(before + left + key + right + after)
    assert key not in out
    tail = key[-16:]
    if tail not in before and tail not in after:
        assert tail not in out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(texts | st.sampled_from(CLEAN_LINES) | (dify_keys | sk_keys).map("key=".__add__), max_size=12))
def test_a_batch_is_redacted_exactly_like_its_texts_one_by_one(batch: list[str]) -> None:
    one: list[tuple[str, int]] = []
    many: list[tuple[str, int]] = []
    single = Redactor(RedactConfig(), on_redact=lambda rule, n: one.append((rule, n)))
    batched = Redactor(RedactConfig(), on_redact=lambda rule, n: many.append((rule, n)))
    assert batched.redact_batch(batch) == [single.redact(text) for text in batch]
    assert sorted(many) == sorted(one)


def test_a_batch_with_nul_bytes_falls_back_to_one_by_one() -> None:
    key = "sk-" + "a1B2" * 12
    batch = ["clean\x00line", f"api_key={key}", "another clean line"]
    out = Redactor(RedactConfig()).redact_batch(batch)
    assert out[0] == "clean\x00line" and out[2] == "another clean line"
    assert key not in out[1] and "[REDACTED]" in out[1]
