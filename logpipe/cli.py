"""The command line: `logpipe run`, `logpipe check`, `logpipe version`. The only place that exits the process.

Exit codes: 0 ok; 78 (EX_CONFIG) bad configuration; 69 (EX_UNAVAILABLE) Docker or Loki unreachable (`check`)
or a port cannot be bound (`run`); 70 internal error. Credentials are never accepted on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from logpipe import __version__, selflog
from logpipe.config import Config
from logpipe.configload import ConfigError, load_config
from logpipe.daemon import Daemon
from logpipe.sinks.loki import LokiClient
from logpipe.sources.docker import Filter, own_container_id
from logpipe.sources.engine import ContainerGone, DockerEngine, DockerUnavailable
from logpipe.state import StateError

EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    code = run_cli(argv, env)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything durable is written by now. Exiting here skips the interpreter's wait for worker threads: a push
    # still hanging in an HTTP request must not hold `docker stop` past its grace period (its intent is saved).
    os._exit(code)


def run_cli(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"logpipe {__version__}")
        return 0
    path = args.config or (Path(env["LOGPIPE_CONFIG"]) if env.get("LOGPIPE_CONFIG") else None)
    try:
        config, used = load_config(path, env)
    except ConfigError as exc:
        where = str(path) if path else "configuration"
        print(f"{where}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        return _check(config, used, offline=args.offline)
    if args.sink:
        config = dataclasses.replace(config, sink=args.sink)
    selflog.setup(config.log.level)
    try:
        daemon = Daemon(config, used, env)
    except StateError as exc:
        print(f"cannot use the state directory {config.state.dir}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return daemon.run()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logpipe", description="Ship a Dify stack's Docker logs to Grafana Loki.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, help="TOML config file (default: $LOGPIPE_CONFIG or config/logpipe.toml)")
    run.add_argument("--sink", choices=("loki", "stdout"), help="where entries go (default: loki)")
    check = sub.add_parser("check", help="validate the configuration and test Docker and Loki")
    check.add_argument("--config", type=Path, help="TOML config file to check")
    check.add_argument("--offline", action="store_true", help="only validate; do not contact Docker or Loki")
    sub.add_parser("version", help="print the version")
    return parser


def _check(config: Config, used: Path | None, offline: bool) -> int:
    print(f"config: {used or 'defaults (no config file)'}: ok")
    if offline:
        return 0
    healthy = True
    try:
        engine = DockerEngine(config.docker.host, config.docker.api_timeout_secs)
        filt = Filter(config.docker, config.docker.self_container_id or own_container_id())
        ids = engine.container_ids()
        wanted = 0
        for cid in ids:
            try:
                wanted += filt.wants(engine.inspect(cid))
            except ContainerGone:
                continue
        print(f"docker: reachable (API {engine.api_version}); {len(ids)} containers, {wanted} match the filters")
        engine.close()
    except DockerUnavailable as exc:
        print(f"docker: UNREACHABLE: {exc}")
        healthy = False
    if config.sink == "loki":
        client = LokiClient(config.loki)
        if client.ready():
            print(f"loki: ready at {config.loki.url}")
        else:
            print(f"loki: NOT READY at {config.loki.url}")
            healthy = False
        client.close()
    return 0 if healthy else EXIT_UNAVAILABLE
