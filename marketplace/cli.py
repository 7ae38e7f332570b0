"""Command-line tools: `flask crowdline …` and `flask rq …`."""

from __future__ import annotations

import secrets
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup

crowdline_cli = AppGroup("crowdline", help="Crowdline administration.")
rq_cli = AppGroup("rq", help="Background jobs on Redis (RQ).")


@crowdline_cli.command("ensure-admin")
@click.option("--email", envvar="CROWDLINE_ADMIN_EMAIL", default=None)
@click.option("--password", envvar="CROWDLINE_ADMIN_PASSWORD", default=None)
def ensure_admin(email: str | None, password: str | None) -> None:
    """Create the first platform admin unless one exists.

    Uses CROWDLINE_ADMIN_EMAIL / CROWDLINE_ADMIN_PASSWORD when set; otherwise, on a fresh
    database, creates admin@crowdline.local with a random password and prints it once.
    """
    from marketplace.accounts import services
    from marketplace.errors import CrowdlineError

    if email:
        try:
            user, created = services.ensure_platform_admin(email, password)
        except CrowdlineError as error:
            hint = "" if password else " Set CROWDLINE_ADMIN_PASSWORD (or --password) too."
            raise click.ClickException(error.detail + hint) from None
        click.echo(f"platform admin {user.email}: {'created' if created else 'already present'}")
        return
    if services.platform_admin_exists():
        click.echo("platform admin: already present")
        return
    password = secrets.token_urlsafe(18)
    user, _ = services.ensure_platform_admin("admin@crowdline.local", password)
    click.echo("=" * 66)
    click.echo("Created the first platform admin. These credentials are shown once:")
    click.echo(f"  e-mail:   {user.email}")
    click.echo(f"  password: {password}")
    click.echo("=" * 66)


payouts_cli = AppGroup("payouts", help="Worker payouts.")
crowdline_cli.add_command(payouts_cli)


@payouts_cli.command("run")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 1000))
def payouts_run(batch_size: int) -> None:
    """Retry due pending payouts, then pay every worker whose available balance reached the
    minimum (what the hourly job does), printing each payout as it goes."""
    from billing import payouts

    due = payouts.due_counts()
    click.echo(
        f"{due['pending_due']} pending payout(s) to retry, "
        f"{due['workers_due']} balance(s) due a payout"
    )

    def show(event: payouts.PayoutEvent) -> None:
        line = (
            f"payout {event.payout_id} worker {event.worker_id} "
            f"{event.amount} {event.currency}: {event.outcome}"
        )
        if event.outcome == "paid":
            line += f" ({event.transfer_id})"
        elif event.outcome in ("retrying", "failed"):
            line += f" after {event.attempts} attempt(s): {event.error}"
        click.echo(line)

    summary = payouts.run_payouts(batch_size=batch_size, progress=show)
    amounts = ", ".join(f"{v} {k}" for k, v in sorted(summary.paid_amounts.items())) or "nothing"
    click.echo(
        f"done: {summary.created} created, {summary.attempted} attempted, {summary.paid} paid "
        f"({amounts}), {summary.retrying} to retry, {summary.failed} failed"
    )


@rq_cli.command("worker")
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--with-scheduler", is_flag=True, help="Also run RQ's scheduler for enqueue_in.")
def rq_worker(queues: tuple[str, ...], burst: bool, with_scheduler: bool) -> None:
    """Run an RQ worker with this app built once."""
    from rq import Queue, Worker

    from marketplace.background import redis_connection, set_worker_app

    settings = current_app.config["CROWDLINE"]
    if not settings.redis_url:
        raise click.ClickException("REDIS_URL is not set; without it jobs run inline.")
    set_worker_app(current_app._get_current_object())
    connection = redis_connection()
    names = list(queues) or [settings.rq_queue]
    worker = Worker([Queue(n, connection=connection) for n in names], connection=connection)
    click.echo(f"RQ worker on {', '.join(names)} ({'burst' if burst else 'until stopped'})")
    worker.work(burst=burst, with_scheduler=with_scheduler)


@rq_cli.command("scheduler")
@click.option("--interval", default=30, show_default=True, help="Seconds between checks.")
@click.option("--once", is_flag=True, help="Enqueue what is due once, then stop.")
def rq_scheduler(interval: int, once: bool) -> None:
    """Enqueue the periodic jobs, each under a deterministic id so schedulers never double up."""
    from marketplace import clock
    from marketplace.background import (
        PERIODIC_JOBS,
        enqueue_now,
        periodic_job_id,
        redis_connection,
    )

    settings = current_app.config["CROWDLINE"]
    redis = redis_connection() if settings.redis_url and not settings.jobs_inline else None
    last_slot: dict[str, int] = {}  # what this process already enqueued (all it has inline)
    while True:
        now = clock.now().timestamp()
        enqueued = 0
        for job in PERIODIC_JOBS:
            slot = int(now // job.every_seconds)
            job_id = periodic_job_id(settings.rq_queue, job.path, slot)
            # One run per period however many schedulers there are and however often they
            # wake: the first to claim the slot enqueues it (RQ itself would queue a copy).
            claim = f"crowdline:periodic:{job_id}"
            if last_slot.get(job.path) == slot or (
                redis is not None and not redis.set(claim, 1, nx=True, ex=2 * job.every_seconds)
            ):
                continue
            last_slot[job.path] = slot
            enqueue_now(job.path, job_id=job_id)
            enqueued += 1
        click.echo(f"enqueued {enqueued} of {len(PERIODIC_JOBS)} periodic job(s)")
        if once:
            return
        time.sleep(interval)


@crowdline_cli.command("reconcile")
@click.option("--skip-processor", is_flag=True, help="Check the ledger against itself only.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile(skip_processor: bool, as_json: bool) -> None:
    """Check the ledger against itself and against the payment processor's records.

    Exits 1 when there is any discrepancy (or the processor cannot be reached), 0 otherwise.
    """
    import json

    from billing.reconciliation import format_report
    from billing.reconciliation import reconcile as run_reconciliation

    report = run_reconciliation(processor=not skip_processor)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
    if not report.ok:
        raise SystemExit(1)


@crowdline_cli.command("fraud-scan")
@click.option("--job-id", type=click.IntRange(1), default=None, help="Scan this job only.")
def fraud_scan(job_id: int | None) -> None:
    """Run the fraud scans now (what the hourly job does) and print what changed."""
    import json

    from jobs.fraud_scan import run_scan  # composition root: the CLI wires every package

    click.echo(json.dumps(run_scan(job_id), indent=2))


def register(app: Flask) -> None:
    app.cli.add_command(crowdline_cli)
    app.cli.add_command(rq_cli)
    from jobs.simulate.cli import crowd_cli  # the composition root may name jobs

    app.cli.add_command(crowd_cli)
