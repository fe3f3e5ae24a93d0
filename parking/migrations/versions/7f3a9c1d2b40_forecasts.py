"""forecasts: lots.region, forecast_curves, forecast_checks

Revision ID: 7f3a9c1d2b40
Revises: 1e0c2e9100ca
Create Date: 2026-12-01 09:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7f3a9c1d2b40'
down_revision = '1e0c2e9100ca'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('lots') as batch_op:
        batch_op.add_column(sa.Column('region', sa.String(length=16), nullable=True))
    op.create_table('forecast_curves',
    sa.Column('lot_id', sa.String(length=64), nullable=False),
    sa.Column('generated_at', sa.Float(), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], ),
    sa.PrimaryKeyConstraint('lot_id')
    )
    op.create_table('forecast_checks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lot_id', sa.String(length=64), nullable=False),
    sa.Column('made_at', sa.Float(), nullable=False),
    sa.Column('horizon', sa.Integer(), nullable=False),
    sa.Column('target_at', sa.Float(), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('occupied', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.Column('actual', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('lot_id', 'made_at', 'horizon', name='uq_forecast_checks_made')
    )
    op.create_index('ix_forecast_checks_target_at', 'forecast_checks', ['target_at'], unique=False)


def downgrade():
    op.drop_index('ix_forecast_checks_target_at', table_name='forecast_checks')
    op.drop_table('forecast_checks')
    op.drop_table('forecast_curves')
    with op.batch_alter_table('lots') as batch_op:
        batch_op.drop_column('region')
