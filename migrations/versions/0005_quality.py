"""quality: worker accuracy, adaptive consensus, escalation, review

Revision ID: 0005_quality
Revises: 0004_billing
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

# revision identifiers, used by Alembic.
revision = "0005_quality"
down_revision = "0004_billing"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
