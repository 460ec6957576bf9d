"""The `pmkeeper` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from core.auth import Role
from core.logging import configure_logging
from core.settings import Settings, load_settings
from pmkeeper.container import EMBEDDED_BROKER_FILE, Container, run_roles, scheduler_jobs
from pmkeeper.projection import render_projection
from pmkeeper.supervisor import IngestSupervisor
from scheduler.generation import PlanGenerator
from simulator.fleet import parse_scenario_assignments
from simulator.publisher import run_simulation

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    run_roles(
        settings,
        api=True,
        ingest=True,
        scheduler=True,
        stop=_stop_on_signals(),
        embedded_broker=True,
    )
    return 0


def _cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.scheduler.enabled:
        raise SystemExit("pmkeeper scheduler: PMK_SCHEDULER__ENABLED is false")
    if args.once:
        container = Container.build(settings)
        try:
            for job in scheduler_jobs(container):
                log.info("running %s once", job.id)
                job.run()
        finally:
            container.close()
        return 0
    run_roles(
        settings,
        api=False,
        ingest=False,
        scheduler=True,
        stop=_stop_on_signals(),
        embedded_broker=False,
    )
    return 0


def _cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    container = Container.build(settings)
    try:
        generator = PlanGenerator(container.schedule, read_meters=container.telemetry.read_many)
        projection = generator.project(container.clock.now(), args.horizon)
    finally:
        container.close()
    print(render_projection(projection, as_json=args.json))
    return 0


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    run_roles(settings, api=True, ingest=False, stop=_stop_on_signals(), embedded_broker=False)
    return 0


def _cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers is not None:
        settings.ingest = settings.ingest.model_copy(update={"workers": args.workers})
    if settings.mqtt.url is None:
        raise SystemExit("pmkeeper ingest: no broker configured; set PMK_MQTT__URL")
    if settings.ingest.workers > 1:
        IngestSupervisor(settings, args.config).run(_stop_on_signals())
        return 0
    run_roles(settings, api=False, ingest=True, stop=_stop_on_signals(), embedded_broker=False)
    return 0


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    container = Container.build(settings)
    try:
        match args.token_command:
            case "create":
                token = container.tokens.create(Role(args.role), args.name, container.clock.now())
                print(f"created a {args.role} token named {args.name!r}; it is shown only once:")
                print(token)
            case "list":
                for info in container.tokens.list():
                    print(json.dumps(dataclasses.asdict(info), default=str))
            case _:
                container.tokens.revoke(args.id, container.clock.now())
                print(f"revoked token {args.id}")
    finally:
        container.close()
    return 0


def _cmd_deadletters(settings: Settings, args: argparse.Namespace) -> int:
    container = Container.build(settings)
    try:
        letters = container.deadletters.list(asset_id=args.asset, limit=args.limit)
    finally:
        container.close()
    for letter in letters:
        entry = {
            "id": letter.id,
            "received_at": letter.received_at.isoformat(),
            "topic": letter.topic,
            "asset_id": letter.asset_id,
            "code": letter.code,
            "reason": letter.reason,
            "payload_size": letter.payload_size,
            "payload": letter.payload.decode("utf-8", errors="replace"),
        }
        if args.json:
            print(json.dumps(entry))
        else:
            print(
                f"{entry['id']:>8}  {entry['received_at']}  {letter.code:<20} "
                f"{letter.topic}  {letter.reason}"
            )
    if not letters and not args.json:
        print("no dead letters")
    return 0


def _default_broker_url(settings: Settings) -> str:
    """Return the configured broker, else the one a local `serve` started, else 1883."""
    if settings.mqtt.url:
        return settings.mqtt.url
    url_file = settings.data_dir / EMBEDDED_BROKER_FILE
    if url_file.is_file():
        return url_file.read_text().strip()
    return "mqtt://127.0.0.1:1883"


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    url = args.url or _default_broker_url(settings)
    password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
    log.info("simulating %d assets at %.1f msg/s each on %s", args.assets, args.rate, url)
    try:
        report = run_simulation(
            url,
            assets=args.assets,
            rate=args.rate,
            qos=1 if args.qos else 0,
            seed=args.seed,
            duration_s=args.duration,
            count=args.count,
            scenarios=parse_scenario_assignments(args.scenario),
            topic=settings.mqtt.topic,
            batch=args.batch,
            username=settings.mqtt.username,
            password=password,
            stop=_stop_on_signals(),
        )
    except (ValueError, ConnectionError) as error:
        print(f"pmkeeper simulate: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.messages_failed == 0 else 1


def _horizon(text: str) -> timedelta:
    """Parse a horizon such as 90d, 12w, 36h or an ISO 8601 duration (P90D)."""
    units = {"d": "days", "w": "weeks", "h": "hours"}
    value = text.strip().lower()
    try:
        if value[-1:] in units:
            horizon = timedelta(**{units[value[-1]]: int(value[:-1])})
        else:
            horizon = TypeAdapter(timedelta).validate_python(text)
    except (ValueError, PydanticValidationError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"not a horizon: {text!r} (use e.g. 90d, 12w, 36h or P90D)"
        ) from None
    if not timedelta(0) < horizon <= timedelta(days=3660):
        raise argparse.ArgumentTypeError(f"horizon must be between 1 hour and 10 years: {text!r}")
    return horizon


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be between 1 and 64, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `pmkeeper` command."""
    parser = argparse.ArgumentParser(prog="pmkeeper", description=__doc__)
    parser.add_argument(
        "--config", type=Path, help="YAML or TOML settings file (PMK_ variables override it)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("serve", help="all roles in one process, on embedded defaults")
    commands.add_parser("api", help="the HTTP API only")
    scheduler = commands.add_parser(
        "scheduler", help="plan generation and the periodic sweeps (one leader among replicas)"
    )
    scheduler.add_argument(
        "--once",
        action="store_true",
        help="run every job once now and exit (no leader election: every job is idempotent)",
    )
    plan = commands.add_parser(
        "plan", help="dry run: the work orders, bookings and parts the plans would produce"
    )
    plan.add_argument("--horizon", type=_horizon, default=timedelta(days=90), help="e.g. 90d")
    plan.add_argument("--json", action="store_true", help="one JSON document")
    ingest = commands.add_parser("ingest", help="MQTT telemetry ingest only (needs PMK_MQTT__URL)")
    ingest.add_argument(
        "--workers",
        type=_positive_int,
        help="processes on one shared subscription (default PMK_INGEST__WORKERS, 1)",
    )

    simulate = commands.add_parser("simulate", help="publish telemetry from a simulated fleet")
    simulate.add_argument("--url", help="broker URL (default: PMK_MQTT__URL or local serve)")
    simulate.add_argument("--assets", type=int, default=10)
    simulate.add_argument("--rate", type=float, default=1.0, help="messages/s per asset")
    simulate.add_argument("--batch", type=int, default=1, help="readings per message (array)")
    simulate.add_argument("--qos", type=int, choices=(0, 1), default=1)
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--duration", type=float, help="seconds to run (default: until ^C)")
    simulate.add_argument("--count", type=int, help="stop after this many messages")
    simulate.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="ASSET=SCENARIO",
        help="degrade an asset: bearing_wear, overheating or silent (repeatable)",
    )

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="issue a token; prints it as the last line")
    create.add_argument("--role", choices=[role.value for role in Role], required=True)
    create.add_argument("--name", default="cli")
    token_commands.add_parser("list", help="list tokens (never their secrets)")
    revoke = token_commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)

    deadletters = commands.add_parser("deadletters", help="list refused messages, newest first")
    deadletters.add_argument("--asset")
    deadletters.add_argument("--limit", type=int, default=50)
    deadletters.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


_COMMANDS = {
    "serve": _cmd_serve,
    "api": _cmd_api,
    "scheduler": _cmd_scheduler,
    "plan": _cmd_plan,
    "ingest": _cmd_ingest,
    "simulate": _cmd_simulate,
    "token": _cmd_token,
    "deadletters": _cmd_deadletters,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `pmkeeper` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except (ValueError, FileNotFoundError) as error:
        print(f"pmkeeper: invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return _COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
