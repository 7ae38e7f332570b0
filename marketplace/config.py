"""Every setting Crowdline reads from the environment, in one place."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one kept in instance/ so restarts keep sessions."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = ROOT / "instance" / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    return key


def _normalise_database_url(url: str) -> str:
    # psycopg 3 is the driver we ship; accept the common postgres:// spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass
class Settings:
    database_url: str
    redis_url: str | None
    secret_key: str
    sandbox: bool = False
    testing: bool = False
    admin_email: str | None = None
    admin_password: str | None = None
    access_token_seconds: int = 3600
    refresh_token_seconds: int = 30 * 24 * 3600
    authorization_code_seconds: int = 600
    max_json_bytes: int = 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    idempotency_seconds: int = 24 * 3600
    login_attempts_per_window: int = 10
    login_window_seconds: int = 900
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    rq_queue: str = "default"
    # Money: the platform's fee on top of each judgment's price (basis points), how long
    # earnings stay pending for QA, the smallest payout, and when job.budget_low fires
    # (when the free budget covers fewer than this many more judgments).
    platform_fee_bps: int = 2000
    qa_window_seconds: int = 3 * 24 * 3600
    payout_minimum: int = 500
    budget_low_judgments: int = 20
    # Run background jobs inline after commit even when Redis is configured (tests).
    jobs_inline: bool = False
    # How many reverse proxies (load balancer, ingress) sit in front and set X-Forwarded-*.
    proxy_hops: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        default_db = f"sqlite:///{ROOT / 'instance' / 'crowdline.db'}"
        return cls(
            database_url=_normalise_database_url(os.environ.get("DATABASE_URL", default_db)),
            redis_url=os.environ.get("REDIS_URL") or None,
            secret_key=_secret_key(),
            sandbox=_flag("CROWDLINE_SANDBOX"),
            admin_email=os.environ.get("CROWDLINE_ADMIN_EMAIL") or None,
            admin_password=os.environ.get("CROWDLINE_ADMIN_PASSWORD") or None,
            stripe_secret_key=os.environ.get("STRIPE_SECRET_KEY") or None,
            stripe_webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
            stripe_api_base=os.environ.get("STRIPE_API_BASE") or None,
            rq_queue=os.environ.get("RQ_QUEUE", "default"),
            platform_fee_bps=int(os.environ.get("CROWDLINE_PLATFORM_FEE_BPS", "2000")),
            qa_window_seconds=int(os.environ.get("CROWDLINE_QA_WINDOW_SECONDS", str(3 * 86400))),
            payout_minimum=int(os.environ.get("CROWDLINE_PAYOUT_MINIMUM", "500")),
            jobs_inline=_flag("CROWDLINE_JOBS_INLINE"),
            proxy_hops=int(os.environ.get("CROWDLINE_PROXY_HOPS", "0")),
        )

    def flask_config(self) -> dict:
        """The Flask/extension configuration these settings imply."""
        engine_options: dict = {"pool_pre_ping": True}
        if self.database_url.startswith("postgresql"):
            # psycopg prepares a statement run 5 times; PostgreSQL may then plan it once for
            # any parameters. The lease query's generic plan scans a job's tasks (26 s at a
            # million, against 0.3 ms custom), so every statement is planned for its values.
            engine_options["connect_args"] = {"options": "-c plan_cache_mode=force_custom_plan"}
        if self.database_url.startswith("sqlite"):
            # Threads share the file; wait for the write lock instead of failing at once.
            engine_options = {"connect_args": {"timeout": 30, "check_same_thread": False}}
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
            "TESTING": self.testing,
            "MAX_CONTENT_LENGTH": self.max_upload_bytes,
            "API_TITLE": "Crowdline API",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/api/v1",
            "OPENAPI_JSON_PATH": "openapi.json",
            "OPENAPI_REDOC_PATH": "docs",
            "OPENAPI_REDOC_URL": "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
            "OPENAPI_SWAGGER_UI_PATH": None,
            "JSON_SORT_KEYS": False,
            "CROWDLINE": self,
        }
