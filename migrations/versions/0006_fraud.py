"""fraud: signals, risk scores, actions, appeals

Revision ID: 0006_fraud
Revises: 0005_quality
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0006_fraud"
down_revision = "0005_quality"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _enum(name, length, *values):
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=length)


def upgrade():
    op.create_table(
        "fraud_signals",
        sa.Column("id", ID, nullable=False),
        sa.Column("worker_id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column(
            "kind",
            _enum(
                "fraud_signal_kind",
                20,
                "too_fast",
                "gold_failed",
                "regular_timing",
                "degenerate",
                "random_answers",
                "low_agreement",
                "collusion",
                "shared_device",
                "shared_network",
            ),
            nullable=False,
        ),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("reviewed_weight", sa.Float(), nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_fraud_signals_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["worker_profiles.id"],
            name=op.f("fk_fraud_signals_worker_id_worker_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_signals")),
        sa.UniqueConstraint("worker_id", "key", name=op.f("uq_fraud_signals_worker_id_key")),
    )
    with op.batch_alter_table("fraud_signals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fraud_signals_job_id"), ["job_id"], unique=False)

    op.create_table(
        "fraud_cases",
        sa.Column("id", ID, nullable=False),
        sa.Column("worker_id", ID, nullable=False),
        sa.Column("status", _enum("fraud_case_status", 12, "open", "reviewed"), nullable=False),
        sa.Column(
            "action",
            _enum("fraud_action", 12, "none", "flag", "restrict", "suspend", "ban"),
            nullable=False,
        ),
        sa.Column("risk_score", sa.Float(), nullable=False),
        sa.Column("status_before", sa.String(length=16), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by_user_id", ID, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("voiding", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["reviewed_by_user_id"],
            ["users.id"],
            name=op.f("fk_fraud_cases_reviewed_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["worker_profiles.id"],
            name=op.f("fk_fraud_cases_worker_id_worker_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_cases")),
        sa.UniqueConstraint("worker_id", name=op.f("uq_fraud_cases_worker_id")),
    )
    with op.batch_alter_table("fraud_cases", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_cases_status_id", ["status", "id"], unique=False)

    op.create_table(
        "fraud_appeals",
        sa.Column("id", ID, nullable=False),
        sa.Column("case_id", ID, nullable=False),
        sa.Column("worker_id", ID, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "status",
            _enum("fraud_appeal_status", 12, "open", "upheld", "overturned"),
            nullable=False,
        ),
        sa.Column("action_appealed", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by_user_id", ID, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["fraud_cases.id"],
            name=op.f("fk_fraud_appeals_case_id_fraud_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_user_id"],
            ["users.id"],
            name=op.f("fk_fraud_appeals_decided_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["worker_profiles.id"],
            name=op.f("fk_fraud_appeals_worker_id_worker_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_appeals")),
    )
    with op.batch_alter_table("fraud_appeals", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_appeals_status_id", ["status", "id"], unique=False)
        batch_op.create_index(
            "ix_fraud_appeals_worker_status", ["worker_id", "status"], unique=False
        )

    # The shared-device scan groups assignments by fingerprint and IP hash.
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assignments_fingerprint_worker",
            ["fingerprint_hash", "worker_id"],
            unique=False,
            postgresql_where=sa.text("fingerprint_hash IS NOT NULL"),
            sqlite_where=sa.text("fingerprint_hash IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_assignments_ip_worker",
            ["ip_hash", "worker_id"],
            unique=False,
            postgresql_where=sa.text("ip_hash IS NOT NULL"),
            sqlite_where=sa.text("ip_hash IS NOT NULL"),
        )


def downgrade():
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_assignments_ip_worker",
            postgresql_where=sa.text("ip_hash IS NOT NULL"),
            sqlite_where=sa.text("ip_hash IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_assignments_fingerprint_worker",
            postgresql_where=sa.text("fingerprint_hash IS NOT NULL"),
            sqlite_where=sa.text("fingerprint_hash IS NOT NULL"),
        )
    with op.batch_alter_table("fraud_appeals", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_appeals_worker_status")
        batch_op.drop_index("ix_fraud_appeals_status_id")
    op.drop_table("fraud_appeals")
    with op.batch_alter_table("fraud_cases", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_cases_status_id")
    op.drop_table("fraud_cases")
    with op.batch_alter_table("fraud_signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraud_signals_job_id"))
    op.drop_table("fraud_signals")
