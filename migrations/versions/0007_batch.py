"""batch aggregation runs (Dawid-Skene per job) and task flags (throughput)

Revision ID: 0007_batch
Revises: 0006_fraud
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0007_batch"
down_revision = "0006_fraud"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade():
    op.create_table(
        "aggregation_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                name="aggregation_status",
                native_enum=False,
                create_constraint=True,
                length=12,
            ),
            nullable=False,
        ),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("requested_by_user_id", ID, nullable=True),
        sa.Column("tasks", sa.Integer(), nullable=True),
        sa.Column("gold_tasks", sa.Integer(), nullable=True),
        sa.Column("workers", sa.Integer(), nullable=True),
        sa.Column("judgments", sa.Integer(), nullable=True),
        sa.Column("labels", sa.Integer(), nullable=True),
        sa.Column("labels_written", sa.Integer(), nullable=True),
        sa.Column("labels_changed", sa.Integer(), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=True),
        sa.Column("converged", sa.Boolean(), nullable=True),
        sa.Column("log_likelihood", sa.Float(), nullable=True),
        sa.Column("changes", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_aggregation_runs_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["users.id"],
            name=op.f("fk_aggregation_runs_requested_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aggregation_runs")),
    )
    with op.batch_alter_table("aggregation_runs", schema=None) as batch_op:
        batch_op.create_index("ix_aggregation_runs_job_status", ["job_id", "status"], unique=False)

    op.create_table(
        "task_flags",
        sa.Column("id", ID, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_task_flags_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_flags_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_flags")),
        sa.UniqueConstraint("task_id", "kind", name=op.f("uq_task_flags_task_id_kind")),
    )
    with op.batch_alter_table("task_flags", schema=None) as batch_op:
        batch_op.create_index("ix_task_flags_job_kind", ["job_id", "kind", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("task_flags", schema=None) as batch_op:
        batch_op.drop_index("ix_task_flags_job_kind")
    op.drop_table("task_flags")
    with op.batch_alter_table("aggregation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregation_runs_job_status")
    op.drop_table("aggregation_runs")
