"""The sinks: where entries go once parsed. Each consumes the lanes (its input buffer) and acknowledges what it
delivered into the checkpoint. The daemon knows them only through `Sink`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from logpipe.config import Config


@dataclass(frozen=True, slots=True)
class SinkStats:
    """A sink's gauges, read at scrape time."""

    loki_up: bool = True
    pushes_in_flight: int = 0
    spool_bytes: int = 0
    spool_records: int = 0
    spool_oldest_age_secs: float = 0.0


class Sink(Protocol):
    """Takes batches from the lanes it was built with, delivers them, and acknowledges them into the checkpoint."""

    def start(self) -> None:
        """Start delivering (in threads of its own)."""

    def stop(self, timeout: float) -> None:
        """Deliver what waits within `timeout` seconds (a sink with a spool keeps the rest there), then stop."""

    def reconfigure(self, config: Config) -> None:
        """Apply the reloadable settings of a new configuration."""

    def ready(self) -> bool:
        """Whether it can deliver now (for /readyz)."""

    def stats(self) -> SinkStats: ...

    def close(self) -> None:
        """Release connections and files (after `stop`)."""
