"""The README is the reference users read: every setting, every environment variable and every self-metric
logpipe has must be documented there, and the CI test command must be present."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from logpipe.config import Config, restart_only
from logpipe.configload import env_settings
from logpipe.telemetry import Telemetry

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _settings() -> list[str]:
    config = Config()
    names = []
    for section in dataclasses.fields(Config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value):
            names.extend(f"{section.name}.{f.name}" for f in dataclasses.fields(value))
        else:
            names.append(section.name)
    return names


def test_every_setting_is_documented() -> None:
    missing = [name for name in _settings() if f"`{name}`" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_environment_variable_is_documented() -> None:
    names = env_settings()
    assert "LOGPIPE_LOKI_URL" in names
    missing = [name for name in names if f"`{name}`" not in README and f" {name}`" not in README]
    assert not missing, f"environment variables missing from README.md: {missing}"


def test_every_self_metric_is_documented() -> None:
    registry = CollectorRegistry()
    Telemetry(registry)
    families = {metric.name for metric in registry.collect()}
    assert "logpipe_entries_dropped" in families
    missing = [name for name in sorted(families) if not re.search(rf"`{name}(_total)?[`{{]", README)]
    assert not missing, f"logpipe_* metrics missing from README.md: {missing}"


def test_readme_names_the_ci_test_command() -> None:
    block = re.search(r"<!-- ci:test-command -->\n```bash\n(.+)\n```\n<!-- /ci:test-command -->", README)
    assert block is not None
    assert block.group(1).startswith("python -m pytest")


def test_restart_only_settings_are_marked() -> None:
    marked = restart_only()

    def needs_restart(name: str) -> bool:
        return name in marked or name.split(".", maxsplit=1)[0] in marked

    for row in (line for line in README.splitlines() if line.startswith("| `") and "LOGPIPE_" in line):
        names = re.findall(r"`([a-z_]+\.[a-z_.]+|sink)`", row.split("|")[1])
        assert names, row
        assert ("(restart)" in row) == any(needs_restart(n) for n in names), row
