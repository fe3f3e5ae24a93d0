"""sensor credentials: per-sensor OSCORE contexts and the bays bound to each (contract §7)

Revision ID: 5c0e7a1d2b3f
Revises: 7f3a9c1d2b40
Create Date: 2026-12-01 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5c0e7a1d2b3f'
down_revision = '7f3a9c1d2b40'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sensor_credentials',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sensor_id', sa.String(length=64), nullable=False),
    sa.Column('kid', sa.LargeBinary(length=7), nullable=False),
    sa.Column('gateway_id', sa.LargeBinary(length=7), nullable=False),
    sa.Column('secret', sa.LargeBinary(length=64), nullable=True),
    sa.Column('salt', sa.LargeBinary(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.Column('replay_index', sa.BigInteger(), nullable=False),
    sa.Column('replay_bits', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kid')
    )
    with op.batch_alter_table('sensor_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sensor_credentials_sensor_id'), ['sensor_id'], unique=False)

    op.create_table('credential_bays',
    sa.Column('credential_id', sa.Integer(), nullable=False),
    sa.Column('bay_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['bay_id'], ['bays.id'], ),
    sa.ForeignKeyConstraint(['credential_id'], ['sensor_credentials.id'], ),
    sa.PrimaryKeyConstraint('credential_id', 'bay_id')
    )
    with op.batch_alter_table('credential_bays', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_credential_bays_bay_id'), ['bay_id'], unique=False)


def downgrade():
    with op.batch_alter_table('credential_bays', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credential_bays_bay_id'))
    op.drop_table('credential_bays')
    with op.batch_alter_table('sensor_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sensor_credentials_sensor_id'))
    op.drop_table('sensor_credentials')
