"""Crowdline: the workforce and marketplace engine behind AI training-data labeling.

`create_app()` is the composition root: it wires every domain package's blueprints,
signal handlers and models into one Flask application.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flask import Flask

from marketplace.config import Settings

log = logging.getLogger("crowdline")


def create_app(config: Settings | dict | None = None) -> Flask:
    """Build the application. `config` may be Settings, or a dict of overrides for tests."""
    settings = config if isinstance(config, Settings) else Settings.from_env()
    overrides = config if isinstance(config, dict) else {}
    for key, value in list(overrides.items()):
        if hasattr(settings, key):
            setattr(settings, key, value)

    app = Flask(
        __name__,
        static_folder=None,
        instance_path=str(Path(__file__).resolve().parent.parent / "instance"),
    )
    app.config.update(settings.flask_config())
    app.config.update({k: v for k, v in overrides.items() if k.isupper()})
    app.json.sort_keys = False

    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_request_hooks(app)
    register_clock(app)
    register_commands(app)
    register_domain_hooks(app)
    register_proxy_fix(app)
    announce_sandbox(app)
    return app


def register_proxy_fix(app: Flask) -> None:
    """Trust X-Forwarded-* from the configured number of proxies, so OAuth sees https."""
    hops = app.config["CROWDLINE"].proxy_hops
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)


def register_extensions(app: Flask) -> None:
    from marketplace.database import include_in_autogenerate
    from marketplace.extensions import api, db, migrate

    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=str(Path(__file__).resolve().parent.parent / "migrations"),
        render_as_batch=True,
        compare_type=True,
        include_object=include_in_autogenerate,
    )
    app.config.setdefault("API_SPEC_OPTIONS", {})
    app.config["API_SPEC_OPTIONS"] = {
        "info": {
            "description": "Crowdline: jobs, tasks, workers, quality and payouts for "
            "AI training-data labeling. Authenticate with `Authorization: Bearer <token>` "
            "from `/api/v1/auth/login` or `/oauth/token`.",
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": "/oauth/authorize",
                            "tokenUrl": "/oauth/token",
                            "refreshUrl": "/oauth/token",
                            "scopes": _scopes(),
                        },
                        "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": _scopes()},
                    },
                },
            }
        },
    }
    api.init_app(app)
    _import_models()


def _scopes() -> dict[str, str]:
    from marketplace.scopes import SCOPES

    return dict(SCOPES)


def _import_models() -> None:
    """Every package's models, so metadata (and Alembic) sees every table."""
    import billing.models  # noqa: F401
    import credentials.models  # noqa: F401
    import jobs.batch_models
    import jobs.fraud_models
    import jobs.models
    import jobs.throughput_models  # noqa: F401
    import marketplace.accounts.models
    import marketplace.models
    import marketplace.oauth.models  # noqa: F401
    import workers.models  # noqa: F401


def register_blueprints(app: Flask) -> None:
    from billing.routes import blp as billing_blp
    from marketplace.accounts.routes import blp as accounts_blp
    from marketplace.extensions import api
    from marketplace.oauth.routes import api_blp as oauth_api_blp
    from marketplace.oauth.routes import oauth_bp
    from marketplace.ops.routes import blp as ops_blp
    from marketplace.ops.routes import health_bp

    api.register_blueprint(accounts_blp)
    api.register_blueprint(oauth_api_blp)
    api.register_blueprint(ops_blp)
    api.register_blueprint(billing_blp)

    from credentials.routes import blp as credentials_blp
    from workers.payout_routes import blp as payouts_blp
    from workers.routes import blp as workers_blp

    api.register_blueprint(workers_blp)
    api.register_blueprint(credentials_blp)
    api.register_blueprint(payouts_blp)

    from jobs.batch_routes import batch_blp
    from jobs.import_routes import imports_blp
    from jobs.results_routes import results_blp
    from jobs.routes import blp as jobs_blp
    from jobs.routes import task_api
    from jobs.throughput_routes import throughput_blp

    api.register_blueprint(jobs_blp)
    api.register_blueprint(imports_blp)
    api.register_blueprint(results_blp)
    api.register_blueprint(task_api)
    api.register_blueprint(batch_blp)
    api.register_blueprint(throughput_blp)

    from jobs.fraud_routes import fraud_blp
    from jobs.quality_routes import quality_blp
    from jobs.review_routes import review_blp

    api.register_blueprint(fraud_blp)
    api.register_blueprint(quality_blp)
    api.register_blueprint(review_blp)
    app.register_blueprint(oauth_bp)
    app.register_blueprint(health_bp)

    from marketplace.oauth.server import init_authorization_server

    init_authorization_server(app)


def register_error_handlers(app: Flask) -> None:
    from marketplace.errors import register_error_handlers as register

    register(app)


def register_request_hooks(app: Flask) -> None:
    from flask import g

    from marketplace.http import register_request_hooks as register

    @app.before_request
    def forget_previous_caller() -> None:
        # g outlives a request when a test holds the app context open; never reuse a caller.
        g.pop("principal", None)
        g.pop("sandbox_now", None)

    register(app)


def register_clock(app: Flask) -> None:
    from marketplace import clock

    settings: Settings = app.config["CROWDLINE"]
    clock.install(app, clock.SandboxClock() if settings.sandbox else clock.SystemClock())


def register_commands(app: Flask) -> None:
    from marketplace.cli import register

    register(app)


def register_domain_hooks(app: Flask) -> None:
    """Signal handlers of packages further right in the import chain."""
    import billing.tasks  # noqa: F401
    import credentials.tasks  # noqa: F401  (registers its periodic jobs)
    import jobs.fraud_signals
    import jobs.money
    import jobs.tasks  # noqa: F401
    import workers.hooks  # noqa: F401


def announce_sandbox(app: Flask) -> None:
    if app.config["CROWDLINE"].sandbox:
        banner = (
            "\n" + "!" * 78 + "\n"
            "!!  CROWDLINE_SANDBOX=1: the clock can be moved by any platform admin through\n"
            "!!  /api/v1/sandbox/clock. Never run production like this.\n" + "!" * 78 + "\n"
        )
        log.warning(banner)
        print(banner, file=sys.stderr)
