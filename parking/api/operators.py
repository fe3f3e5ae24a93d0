"""GET /api/operators: what the operators' page shows (admin token: it names source addresses)."""
from __future__ import annotations

from flask.views import MethodView

from ..auth import require_admin
from ..extensions import Blueprint
from ..operators import overview

blp = Blueprint("operators", __name__, url_prefix="/api/operators",
                description="Sensor, lot and gateway health for operators (admin)")


@blp.route("")
class OperatorsView(MethodView):
    """The operators' overview."""

    @require_admin
    @blp.response(200, description="sensors (state, credential, refused in the last hour), lots (share "
                                   "reporting), refused attempts by sensor and by source address, gateway state")
    @blp.doc(security=[{"bearerAuth": []}])
    def get(self):
        """Every sensor's state, each lot's share of bays reporting, refusals and the gateway (admin)."""
        return overview()
