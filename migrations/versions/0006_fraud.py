"""fraud: signals, risk scores, actions, appeals

Revision ID: 0006_fraud
Revises: 0005_quality
Create Date: 2026-12-02 05:20:00

"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

# revision identifiers, used by Alembic.
revision = "0006_fraud"
down_revision = "0005_quality"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
