"""bay_runs: compacted history (state runs of each bay)

Revision ID: 8a1c0d2e3f40
Revises: 5c0e7a1d2b3f
Create Date: 2026-12-01 14:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8a1c0d2e3f40'
down_revision = '5c0e7a1d2b3f'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('bay_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bay_id', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('last_ts', sa.Float(), nullable=False),
    sa.Column('occupied', sa.Boolean(), nullable=False),
    sa.Column('readings', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['bay_id'], ['bays.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_bay_runs_bay_ts', 'bay_runs', ['bay_id', 'ts'], unique=False)


def downgrade():
    op.drop_index('ix_bay_runs_bay_ts', table_name='bay_runs')
    op.drop_table('bay_runs')
