"""The ship section: which records go to Loki. Metrics are computed from every record before any of this.

`[[ship.rules]]` are tried in order; the first rule whose `match` holds decides: `drop` (the record is not
shipped), `keep` (shipped; later rules are not tried) or `sample` (a `rate` fraction is shipped: the same
fraction of every request chain, decided by its trace id, so a chain is kept or dropped whole). A record no rule
matches is shipped. The rate limit then caps what each container stream ships per second of its own log time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from logpipe.config.checks import Problems, one_of, positive, regex
from logpipe.event import FORMATS, LEVELS

ACTIONS = ("drop", "keep", "sample")
STREAMS = ("", "stdout", "stderr")


@dataclass(frozen=True)
class ShipMatch:
    """Every condition given must hold; an empty match holds for every record."""

    service: tuple[str, ...] = ()  # any of these compose services
    container: str = ""  # regex, searched in the container name
    stream: str = ""  # stdout or stderr
    level: tuple[str, ...] = ()  # any of these levels
    format: tuple[str, ...] = ()  # any of these event types (dify_json, nginx_access, llm_debug, ...)
    status: str = ""  # regex, matched against the HTTP status (e.g. "^2", "^(200|204)$")
    path: str = ""  # regex, searched in the HTTP path
    contains: str = ""  # a substring of the shipped line
    regex: str = ""  # a regex, searched in the shipped line

    def check(self, path: str, problems: Problems) -> None:
        one_of(problems, f"{path}stream", self.stream, STREAMS)
        for i, level in enumerate(self.level):
            one_of(problems, f"{path}level[{i}]", level, LEVELS)
        for key in ("container", "status", "path", "regex"):
            pattern = getattr(self, key)
            if pattern:
                regex(problems, f"{path}{key}", pattern)
        for i, name in enumerate(self.format):
            one_of(problems, f"{path}format[{i}]", name, FORMATS)


@dataclass(frozen=True)
class ShipRule:
    name: str = ""
    action: str = "drop"
    rate: float = 1.0  # sample: the fraction shipped, 0 < rate <= 1
    match: ShipMatch = field(default_factory=ShipMatch)

    def check(self, path: str, problems: Problems) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum() or len(self.name) > 64:
            problems.append(f"{path}name: a short identifier (letters, digits, - and _) is required, got {self.name!r}")
        one_of(problems, f"{path}action", self.action, ACTIONS)
        if self.action == "sample" and not 0 < self.rate <= 1:
            problems.append(f"{path}rate: must be > 0 and <= 1 for a sample rule, got {self.rate}")
        if self.action != "sample" and self.rate != 1.0:
            problems.append(f"{path}rate: only a sample rule has a rate")


@dataclass(frozen=True)
class ShipConfig:
    rules: tuple[ShipRule, ...] = ()
    # Per container stream, in lines per second of the stream's own log time (a backlog read at full speed is not
    # limited). 0 turns the limit off.
    rate_limit_lines_per_sec: float = 5000.0
    rate_limit_burst: float = 20000.0
    # What error and critical records may still ship once the limit is reached.
    rate_limit_error_lines_per_sec: float = 500.0

    def check(self, path: str, problems: Problems) -> None:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                problems.append(f"{path}rules[{i}].name: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        positive(problems, f"{path}rate_limit_lines_per_sec", self.rate_limit_lines_per_sec, allow_zero=True)
        if self.rate_limit_lines_per_sec:
            positive(problems, f"{path}rate_limit_burst", self.rate_limit_burst)
            if self.rate_limit_burst < self.rate_limit_lines_per_sec:
                problems.append(f"{path}rate_limit_burst: must be >= rate_limit_lines_per_sec")
        error_rate = self.rate_limit_error_lines_per_sec
        positive(problems, f"{path}rate_limit_error_lines_per_sec", error_rate, allow_zero=True)
