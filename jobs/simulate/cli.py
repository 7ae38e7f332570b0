"""`flask crowd simulate`: run a simulated crowd against a sandbox server or in-process."""

from __future__ import annotations

import json
import os
import random
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from flask.cli import AppGroup

from jobs.simulate.driver import Options, Simulation
from jobs.simulate.http import Account, FlaskTransport, HttpTransport
from jobs.simulate.report import format_report

crowd_cli = AppGroup("crowd", help="Crowd simulation against the public API.")

SIM_ADMIN = "sim-admin@sim.example"
SIM_ADMIN_PASSWORD = "simulated admin password"
# In-process runs start here, so that reruns under one seed match to the second.
IN_PROCESS_START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@contextmanager
def in_process_app():
    """A fresh app on a temporary SQLite file, sandbox clock on, jobs inline."""
    from marketplace import create_app
    from marketplace.accounts import services
    from marketplace.database import db

    with tempfile.TemporaryDirectory(prefix="crowdline-sim-") as directory:
        app = create_app(
            {
                "database_url": f"sqlite:///{os.path.join(directory, 'sim.db')}",
                "redis_url": None,
                "jobs_inline": True,
                "sandbox": True,
                "secret_key": "simulation",
            }
        )
        with app.app_context():
            db.create_all()
            services.ensure_platform_admin(SIM_ADMIN, SIM_ADMIN_PASSWORD)
        try:
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()


def simulate(
    options: Options, transport, admin: Account, start: datetime | None, progress=print
) -> tuple[dict[str, Any], Simulation]:
    """Freeze the sandbox clock (at `start`, or where it is) and run the whole simulation."""
    admin.login()
    now = start or datetime.fromisoformat(admin.get("/api/v1/sandbox/clock").ok(200).body["now"])
    admin.post("/api/v1/sandbox/clock", {"set": now.isoformat(), "frozen": True}).ok(200)
    simulation = Simulation(transport, admin, options, progress)
    return simulation.run_all(), simulation


@contextmanager
def in_process_simulation(options: Options, progress=print):
    """Run the whole simulation on a throwaway in-process app (deterministic under the
    seed); yields the report and the simulation, whose client still works inside."""
    # the server draws from the global generator too (gold or not at lease time)
    random.seed(options.seed)
    with in_process_app() as app:
        transport = FlaskTransport(app)
        admin = Account(transport, SIM_ADMIN, SIM_ADMIN_PASSWORD)
        yield simulate(options, transport, admin, IN_PROCESS_START, progress)


def _fixed(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        ks = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of redundancies, e.g. 3,5") from None
    if any(k < 1 or k > 20 for k in ks):
        raise click.BadParameter("each redundancy must lie in 1–20")
    return ks


@crowd_cli.command("simulate")
@click.option("--workers", default=200, show_default=True, type=click.IntRange(2, 100_000))
@click.option("--fraud-share", default=0.2, show_default=True, type=click.FloatRange(0, 1))
@click.option("--tasks", default=5000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--labels", default=2, show_default=True, type=click.IntRange(2, 50))
@click.option("--gold-rate", default=0.1, show_default=True, type=click.FloatRange(0, 0.9))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--redundancy-min", default=2, show_default=True, type=click.IntRange(1, 50))
@click.option("--redundancy-max", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--redundancy-target",
    "target",
    default=0.9,
    show_default=True,
    type=click.FloatRange(0.5, 0.999),
    help="target confidence",
)
@click.option("--compare-fixed", default="", help="also run fixed-redundancy jobs, e.g. 3,5")
@click.option(
    "--reviewer",
    type=click.Choice(["confirm", "none"]),
    default="confirm",
    show_default=True,
    help="the admin's policy on the fraud queue: confirm what the engine suspended, or nothing",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--base-url", default=None, help="a server started with CROWDLINE_SANDBOX=1")
@click.option("--in-process", is_flag=True, help="a throwaway in-process app on SQLite")
@click.option("--admin-email", envvar="CROWDLINE_ADMIN_EMAIL", default=None)
@click.option("--admin-password", envvar="CROWDLINE_ADMIN_PASSWORD", default=None)
def simulate_command(
    workers,
    fraud_share,
    tasks,
    labels,
    gold_rate,
    seed,
    redundancy_min,
    redundancy_max,
    target,
    compare_fixed,
    reviewer,
    as_json,
    base_url,
    in_process,
    admin_email,
    admin_password,
) -> None:
    """Drive a complete job through the public API with a simulated crowd, on the sandbox
    clock, and print label accuracy, fraud caught and money paid."""
    if redundancy_min > redundancy_max:
        raise click.BadParameter("--redundancy-min must not exceed --redundancy-max")
    if bool(base_url) == bool(in_process):
        raise click.UsageError("Give exactly one of --base-url and --in-process.")
    options = Options(
        workers,
        fraud_share,
        tasks,
        labels,
        gold_rate,
        seed,
        redundancy_min,
        redundancy_max,
        target,
        _fixed(compare_fixed),
        reviewer,
    )
    progress = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    if in_process:
        with in_process_simulation(options, progress) as (report, _):
            pass
    else:
        if not (admin_email and admin_password):
            raise click.UsageError("--admin-email and --admin-password (a platform admin).")
        transport = HttpTransport(base_url)
        admin = Account(transport, admin_email, admin_password)
        report, _ = simulate(options, transport, admin, None, progress)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
