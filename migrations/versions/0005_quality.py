"""quality: worker accuracy, adaptive consensus, escalation, review

Revision ID: 0005_quality
Revises: 0004_billing
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0005_quality"
down_revision = "0004_billing"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "job_removals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_removals_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["worker_profiles.id"],
            name=op.f("fk_job_removals_worker_id_worker_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_removals")),
        sa.UniqueConstraint("worker_id", "job_id", name=op.f("uq_job_removals_worker_id_job_id")),
    )
    with op.batch_alter_table("job_removals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_removals_job_id"), ["job_id"], unique=False)

    op.create_table(
        "worker_job_quality",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gold_correct", sa.Integer(), nullable=False),
        sa.Column("gold_wrong", sa.Integer(), nullable=False),
        sa.Column("agreed", sa.Integer(), nullable=False),
        sa.Column("disagreed", sa.Integer(), nullable=False),
        sa.Column(
            "confusion",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_worker_job_quality_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["worker_profiles.id"],
            name=op.f("fk_worker_job_quality_worker_id_worker_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_job_quality")),
        sa.UniqueConstraint(
            "worker_id", "job_id", name=op.f("uq_worker_job_quality_worker_id_job_id")
        ),
    )
    with op.batch_alter_table("worker_job_quality", schema=None) as batch_op:
        batch_op.create_index("ix_worker_job_quality_job", ["job_id", "worker_id"], unique=False)

    op.create_table(
        "review_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "accepted",
                "corrected",
                "sent_back",
                name="review_status",
                native_enum=False,
                create_constraint=True,
                length=12,
            ),
            nullable=False,
        ),
        sa.Column(
            "answer",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "decided_by_user_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by_user_id"],
            ["users.id"],
            name=op.f("fk_review_items_decided_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_review_items_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_review_items_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_review_items_job_status", ["job_id", "status", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_review_items_task_id"), ["task_id"], unique=False)

    op.add_column(
        "jobs",
        sa.Column(
            "escalation",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )
    op.add_column("jobs", sa.Column("agreement_threshold", sa.Float(), nullable=True))

    op.add_column(
        "tasks",
        sa.Column("escalation_level", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("tasks", sa.Column("review_reason", sa.String(length=40), nullable=True))


def downgrade():
    op.drop_column("tasks", "review_reason")
    op.drop_column("tasks", "escalation_level")

    op.drop_column("jobs", "agreement_threshold")
    op.drop_column("jobs", "escalation")

    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_items_task_id"))
        batch_op.drop_index("ix_review_items_job_status")

    op.drop_table("review_items")
    with op.batch_alter_table("worker_job_quality", schema=None) as batch_op:
        batch_op.drop_index("ix_worker_job_quality_job")

    op.drop_table("worker_job_quality")
    with op.batch_alter_table("job_removals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_removals_job_id"))

    op.drop_table("job_removals")
