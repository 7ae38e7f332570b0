"""batch aggregation runs (Dawid-Skene per job)

Revision ID: 0007_batch
Revises: 0006_fraud
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

# revision identifiers, used by Alembic.
revision = "0007_batch"
down_revision = "0006_fraud"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
