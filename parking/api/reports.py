"""Utilization reports (placeholder blueprint; filled in by the reports work)."""
from flask_smorest import Blueprint

blp = Blueprint("reports", __name__, url_prefix="/api", description="Hourly utilization and reports")
