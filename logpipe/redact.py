"""Secret redaction: the last transform a record's text goes through before it leaves the host.

The built-in rules (BUILTIN_RULES) find what a Dify stack prints by accident: Authorization/Bearer credentials,
Dify app and dataset keys, `sk-` provider keys, JWTs, URL passwords, and secret-named key=value and JSON fields.
Each keeps the context (key name, URL, key prefix) and replaces only the secret. `RedactConfig.rules` run after.
Not caught: secrets under other names (`PLUGIN_DAEMON_KEY`, `credentials`), CLI flags (`--password x`), tokens as
URL user names, keys without a known prefix (Google `AIza`, Groq `gsk_`, Hugging Face `hf_`: add rules), JSON
nested deeper than three levels under a secret name, JSON escaped twice.

Cost: a text with none of a few substrings ("needles") is returned after one sieve (its bytes, lower-cased, without
those no needle holds) and a `str.__contains__` per needle. Rules that do run try their regex only where a needle
occurs: Python's `re` scans slowly for case-insensitive words, `str.find` is fast.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from logpipe.config import RedactConfig, RedactRule

_log = logging.getLogger(__name__)

REDACTED = "[REDACTED]"

# Values a built-in rule has already redacted (with the key prefix it keeps). Every built-in skips them, which makes
# redaction idempotent and stops a generic rule from re-redacting what a specific one already labelled.
_KEY_PREFIX = r"sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-|or-v[0-9]-|lf-)?"
_DONE = rf"(?:(?:{_KEY_PREFIX}|app-|dataset-|ds-|eyJ[A-Za-z0-9_-]*\.)?\[REDACTED\])"

# Names whose value is a secret, matched case-insensitively after any prefix (`OPENAI_API_KEY`, `db_password`,
# `clientSecret`) but with nothing after them: `secret_name`, `password_file` and `token_count` are no secrets.
_JSON_NAMES = r"pass(?:word|wd|phrase)|secret|api[_-]?key|(?:private|secret|access)[_-]?key|authorization"
# The same names, written to start at their needle ("pass", "secret", "token", "key").
_KEY_AFTER = "|".join(f"(?<={word}{sep})" for word in ("api", "private", "secret", "access") for sep in ("", "[_-]"))
_KV_NAMES = rf"pass(?:word|wd|phrase)|secret(?:[_-]?key)?|(?=key)(?:{_KEY_AFTER})key"
# `token` is apart: a number after it is a count or a latency (`max_token=512`, `time_to_first_token=0.41`).
_VALUE_END = r"""(?![^\s"'\\&;,)\]}<>])"""
_SEP = r"""(?:\\?["'])?[ \t]*[:=][ \t]*"""
_NUMBER = rf"""(?:\\?["'])?-?[0-9][0-9.]*(?:\\?["'])?{_VALUE_END}"""
_NULLISH = rf"(?:None|null|nil|true|false|True|False|undefined){_VALUE_END}"
# A quoted value cut off by a truncated line or record ends at the line's end: redact it anyway.
_EOL = r"(?=\n)|\Z"
_JSON_KEY_MAX = 64  # characters of a JSON key before the secret name


def _json_nested(depth: int) -> str:
    """A JSON object or array nested up to `depth` levels."""
    expr = ""
    for _ in range(depth):
        items = r'"(?:[^"\\]|\\.)*"|[^{}\[\]"]' + (f"|{expr}" if expr else "")
        expr = rf"\{{(?:{items})*\}}|\[(?:{items})*\]"
    return expr


def _json_secret_pattern(extra_keys: Iterable[str]) -> str:
    extra = "|".join(re.escape(key) for key in extra_keys)
    prefix = f"[A-Za-z0-9_.-]{{0,{_JSON_KEY_MAX}}}?"
    keys = rf'{prefix}(?i:{_JSON_NAMES})|{prefix}(?i:token)(?!\\?"[ \t]*:[ \t]*-?[0-9])' + (
        f"|(?i:{extra})" if extra else ""
    )
    plain = (
        rf'"(?!(?:[A-Za-z]+ )?{_DONE}(?:"|{_EOL}))(?P<secret>(?:[^"\\\n]|\\.)+)(?:"|{_EOL})'
        rf"|(?P<jsecret>-?[0-9][0-9.eE+-]*|{_json_nested(3)})"
    )
    # The same object serialised inside another JSON string: quotes are \" and backslashes \\.
    escaped = (
        rf'\\"(?!(?:[A-Za-z]+ )?{_DONE}(?:\\"|{_EOL}))(?P<secret_e>(?:[^"\\\n]|\\\\(?:\\.|[^\\])|\\[^"\\])+)'
        rf'(?:\\"|{_EOL})'
        r"|(?P<esecret>-?[0-9][0-9.eE+-]*)"
    )
    return rf'(?a)(?P<esc>\\)?"(?:{keys})(?(esc)\\)"[ \t]*:[ \t]*(?(esc)(?:{escaped})|(?:{plain}))'


def _builtin_rules(json_keys: Iterable[str] = ()) -> tuple[RedactRule, ...]:
    return (
        # Dify API keys: "app-" (apps), "dataset-" (knowledge) or "ds-" (per-dataset) + 24 random [A-Za-z0-9]
        # (ApiToken.generate_api_key(prefix, 24) in api/controllers/console). `app-config` is too short to match.
        RedactRule(
            "dify_api_key",
            r"(?a)(?<![A-Za-z0-9])(?:app|dataset|ds)-(?P<secret>[A-Za-z0-9]{24})(?![A-Za-z0-9])",
        ),
        # `sk-` keys: OpenAI (legacy, sk-proj-, sk-svcacct-, sk-admin-), Anthropic (sk-ant-api03-), OpenRouter
        # (sk-or-v1-), Langfuse (sk-lf-) and the OpenAI-compatible providers (DeepSeek, Moonshot...). The body is
        # 32+ characters, or 20+ with a capital or a digit: random keys qualify, `sk-learn` does not.
        RedactRule(
            "openai_key",
            rf"(?a)(?<![A-Za-z0-9]){_KEY_PREFIX}(?P<secret>(?=[A-Za-z0-9_-]{{20}})"
            r"(?:(?=[A-Za-z0-9_-]{32})|(?=[a-z_-]*[A-Z0-9]))[A-Za-z0-9_-]+)",
        ),
        # JWTs: a JSON header and a JSON payload ("eyJ" is base64url for '{"'); the header stays, claims and
        # signature go.
        RedactRule(
            "jwt",
            r"(?a)eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{4,}\.(?P<secret>eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)",
        ),
        # `Authorization: <scheme> <credential>` (also Proxy-Authorization) in headers, dumps, dicts and httpx's
        # (b'authorization', b'...') tuples; and `Bearer <token>` anywhere, when the token is 8+ characters and
        # not a lowercase word ("Bearer authentication").
        RedactRule(
            "bearer",
            r"(?a)(?i:authorization)(?:\\?[\"'])?[ \t]*(?:[:=]|,[ \t]*b?(?=\\?[\"']))[ \t]*(?:\\?[\"'])?"
            rf"(?:(?i:bearer|basic|token|digest|apikey|bot)[ \t]+)?+(?!{_DONE})(?P<secret>[^\s\"'\\,;]+)"
            rf"|(?<![A-Za-z0-9_])(?i:bearer)[ \t]+(?!{_DONE})(?P<secret_1>(?=[A-Za-z0-9._~+/-]{{8}})"
            r"(?![a-z]+(?![A-Za-z0-9._~+/=-]))(?:\[REDACTED\]|[A-Za-z0-9._~+/-])+=*)",
        ),
        # scheme://user:password@host, any scheme (postgresql+psycopg2, redis, amqp, https...).
        RedactRule(
            "url_password",
            rf"(?a)://[^\s:/?#@\"'<>\[\]]*:(?!{_DONE}@)(?P<secret>[^\s/?#\"'<>]+)@",
        ),
        # JSON fields named like secrets (plus RedactConfig.json_keys, exactly), in JSON lines and in JSON
        # fragments, also serialised inside a JSON string. Strings keep their quotes; numbers, objects and arrays
        # become the string "[REDACTED]"; null, true, false and "" stay (nothing to hide; `"has_api_key": true`).
        RedactRule("json_secret", _json_secret_pattern(json_keys)),
        # key=value, key: value, key="go quoted", 'key': 'python repr', in logfmt, URLs, dumps and SQL.
        RedactRule(
            "kv_secret",
            rf"(?a)(?:(?i:{_KV_NAMES})|(?i:token)(?!{_SEP}{_NUMBER})){_SEP}"
            rf'(?:"(?!{_DONE}(?:"|{_EOL}))(?P<secret>(?:[^"\\\n]|\\.)+)(?:"|{_EOL})'
            rf"|'(?!{_DONE}(?:'|{_EOL}))(?P<secret_1>(?:[^'\\\n]|\\.)+)(?:'|{_EOL})"
            rf'|\\"(?!{_DONE}(?:\\"|{_EOL}))(?P<secret_2>(?:[^"\\\n]|\\[^"])+)(?:\\"|{_EOL})'
            rf"|(?!{_DONE}|{_NULLISH})(?P<secret_3>[^\s\"'\\&;,)\]}}<>{{\[]"
            r"(?:\[REDACTED\]|[^\s\"'\\&;,)\]}<>])*))",
        ),
    )


#: The built-in rules, in the order they run. Each name is the `rule` label of logpipe_redactions_total.
BUILTIN_RULES: tuple[RedactRule, ...] = _builtin_rules()

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ASCII_LOWER_BYTES = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
_JSON_KEY_CHARS = string.ascii_letters + string.digits + "_.-"


def _at_needle(text: str, pos: int) -> int:
    return pos


def _json_key_start(text: str, pos: int) -> int:
    """Where the JSON key holding `pos` opens (its quote, or the backslash before it), or -1."""
    quote = text.rfind('"', max(0, pos - _JSON_KEY_MAX - 1), pos)
    if quote < 0 or text[quote + 1 : pos].strip(_JSON_KEY_CHARS):
        return -1
    return quote - 1 if quote > 0 and text[quote - 1] == "\\" else quote


# Per built-in: the lower-case needles without which it cannot match, and where its matches start relative to a
# needle (None: scan the whole text, which is fast for a pattern opening with a literal such as "://").
_GATES: dict[str, tuple[tuple[str, ...], Callable[[str, int], int] | None]] = {
    "dify_api_key": (("app-", "ds-", "dataset-"), _at_needle),
    "openai_key": (("sk-",), _at_needle),
    "jwt": (("eyj",), None),
    "bearer": (("authorization", "bearer"), _at_needle),
    "url_password": (("@",), None),
    # "passw"/"passph", not "pass": Dify's web apps call /api/passport on every visit.
    "json_secret": (("passw", "passph", "secret", "key", "token", "authorization"), _json_key_start),
    "kv_secret": (("passw", "passph", "secret", "key", "token"), _at_needle),
}


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    regex: re.Pattern[str]
    replace: Callable[[re.Match[str]], str]
    needles: tuple[str, ...]  # empty: the rule runs on every text
    locate: Callable[[str, int], int] | None  # None: scan the text; else try the regex only at located starts


def _replacer(regex: re.Pattern[str], replacement: str) -> Callable[[re.Match[str]], str]:
    """Replace the group named `secret` (built-ins: `secret_*`, and `jsecret`/`esecret` for JSON values that
    become a string or an escaped string) if one took part in the match, else the whole match.

    The replacement is literal text: backslashes and `\\g<...>` are not expanded.
    """
    slots: list[tuple[int, str]] = []
    for name, index in sorted(regex.groupindex.items(), key=lambda item: item[1]):
        if name == "secret" or name.startswith("secret_"):
            slots.append((index, replacement))
        elif name.startswith("jsecret"):
            slots.append((index, f'"{replacement}"'))
        elif name.startswith("esecret"):
            slots.append((index, f'\\"{replacement}\\"'))

    def replace(match: re.Match[str]) -> str:
        for index, text in slots:
            start = match.start(index)
            if start >= 0:
                whole, base = match.group(), match.start()
                return whole[: start - base] + text + whole[match.end(index) - base :]
        return replacement

    return replace


def _sieved(needle: str) -> str:
    """A needle as it appears in the sieve: its UTF-8 bytes read as Latin-1."""
    return needle.encode("utf-8", "surrogatepass").decode("latin-1")


def _matches(rule: _Rule, text: str, lowered: str) -> Iterator[re.Match[str]]:
    """The rule's matches, left to right and apart. Anchored rules try their regex only where `locate` puts a
    start for an occurrence of a needle; empty matches (a custom pattern such as `x*`) are dropped."""
    if rule.locate is None:
        yield from (match for match in rule.regex.finditer(text) if match.end() > match.start())
        return
    starts: set[int] = set()
    for needle in rule.needles:
        pos = lowered.find(needle)
        while pos >= 0:
            starts.add(rule.locate(text, pos))
            pos = lowered.find(needle, pos + 1)
    done = 0
    for start in sorted(starts):
        match = rule.regex.match(text, start) if start >= done else None  # -1 means "no start here"
        if match is not None and match.end() > start:
            yield match
            done = match.end()


class Redactor:
    """Applies the built-in rules (unless `builtin_rules` is off) and then `config.rules` to a record's text.

    `on_redact(rule_name, count)` is called once per rule that matched in a text (for logpipe_redactions_total).
    Construction raises `re.error` on a custom pattern that does not compile (config validation rejects those).
    """

    def __init__(self, config: RedactConfig, on_redact: Callable[[str, int], None] | None = None) -> None:
        self._on_redact = on_redact
        rules: list[_Rule] = []
        if config.enabled and config.builtin_rules:
            extra = tuple(key.translate(_ASCII_LOWER) for key in config.json_keys if key)
            for rule in _builtin_rules(extra):
                needles, locate = _GATES[rule.name]
                needles += extra if rule.name == "json_secret" else ()
                regex = re.compile(rule.pattern)
                rules.append(_Rule(rule.name, regex, _replacer(regex, rule.replacement), needles, locate))
        if config.enabled:
            for rule in config.rules:
                regex = re.compile(rule.pattern)
                rules.append(_Rule(rule.name, regex, _replacer(regex, rule.replacement), (), None))
        self._rules = tuple(rules)
        # The no-secret check runs on a sieve of the text: its UTF-8 bytes, ASCII lower-cased, without the bytes no
        # needle holds. Dropping bytes cannot break up a needle, and the sieve of a Dify line is about half as long.
        self._gates = tuple(tuple(_sieved(needle) for needle in rule.needles) for rule in rules)
        self._needles = tuple(sorted({needle for gate in self._gates for needle in gate}))
        keep = set("".join(self._needles).encode("latin-1"))
        self._drop = bytes(c for c in range(256) if _ASCII_LOWER_BYTES[c] not in keep)
        self._drop_but_nul = self._drop.replace(b"\0", b"")  # NUL separates the texts of a batch (no needle has it)
        self._gated = bool(rules) and all(self._gates)

    def redact(self, text: str) -> str:
        """Return `text` with every secret the rules find replaced; the same object when nothing matched.

        Never raises. Built-in rules are idempotent (`redact(redact(x)) == redact(x)`); custom rules are as
        idempotent as their replacement is. Not guaranteed: finding secrets in shapes no rule describes (see
        BUILTIN_RULES). If a rule fails unexpectedly the whole text is replaced rather than shipped unredacted.
        """
        if not self._rules:
            return text
        present: frozenset[str] = frozenset()
        if self._needles:
            sieve = text.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER_BYTES, self._drop).decode("latin-1")
            present = frozenset(filter(sieve.__contains__, self._needles))
            if self._gated and not present:
                return text
        return self._redact_present(text, present)

    def redact_batch(self, texts: list[str]) -> list[str]:
        """`[self.redact(t) for t in texts]`, with one sieve and one scan per needle for the whole batch.

        Most texts hold no needle; they are found without touching each one. Texts holding NUL (the separator)
        fall back to one sieve each.
        """
        if not self._rules or not texts:
            return texts
        if not self._gated or len(texts) == 1:
            return [self.redact(text) for text in texts]
        joined = "\0".join(texts)
        if joined.count("\0") != len(texts) - 1:
            return [self.redact(text) for text in texts]
        sieve = joined.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER_BYTES, self._drop_but_nul)
        whole = sieve.decode("latin-1")
        found = [needle for needle in self._needles if needle in whole]
        if not found:
            return texts
        # Which texts hold which needles, from where each needle occurs: usually a handful of texts in a chunk,
        # so counting separators up to each occurrence beats splitting the chunk into every text.
        holders: dict[int, set[str]] = {}
        for needle in found:
            index, counted, at = 0, 0, whole.find(needle)
            while at >= 0:
                index += whole.count("\0", counted, at)
                counted = at
                holders.setdefault(index, set()).add(needle)
                at = whole.find(needle, at + 1)
        out = texts.copy()
        for index, present in holders.items():
            out[index] = self._redact_present(texts[index], frozenset(present))
        return out

    def _redact_present(self, text: str, present: frozenset[str]) -> str:
        try:
            return self._apply(text, present)
        except Exception:  # a bug or an exhausted resource must neither ship the secret nor stop the pipeline
            _log.warning("Redaction failed, record text replaced", exc_info=True)
            return f"{REDACTED} (redaction failed)"

    def _apply(self, text: str, present: frozenset[str]) -> str:
        # Redacting inserts "[REDACTED]", which holds no needle and which no needle spans: needles absent from the
        # original text stay absent. Lower-case ASCII only: the built-ins fold ASCII case only, and positions must
        # not move.
        lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
        for rule, gate in zip(self._rules, self._gates, strict=True):
            if gate and present.isdisjoint(gate):
                continue
            pieces: list[str] = []
            done = 0
            for match in _matches(rule, text, lowered):
                pieces += (text[done : match.start()], rule.replace(match))
                done = match.end()
            if not pieces:
                continue
            count = len(pieces) // 2
            text = "".join((*pieces, text[done:]))
            lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
            try:
                if self._on_redact is not None:
                    self._on_redact(rule.name, count)
            except Exception:  # the counter must not decide whether a secret ships
                _log.warning("Redaction counter callback failed rule=%s", rule.name, exc_info=True)
        return text
