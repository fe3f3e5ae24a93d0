"""Serves the drivers' map (`/`), the planners' page (`/planner`) and the operators' (`/operators`)."""
from flask import Blueprint, current_app, render_template

from .reports import BUSY_PCT

bp = Blueprint("pages", __name__)


@bp.get("/")
def map_page():
    """The drivers' map; the page reads everything else from the JSON API."""
    return render_template(
        "map.html",
        tile_url=current_app.config["TILE_URL"],
        tile_attribution=current_app.config["TILE_ATTRIBUTION"],
        refresh_seconds=30,
    )


@bp.get("/planner")
def planner_page():
    """The planners' page: hourly patterns, summaries and downloads."""
    return render_template("planner.html", busy_pct=BUSY_PCT)


@bp.get("/operators")
def operators_page():
    """The operators' page; its data (/api/operators) needs the admin token, asked for on the page."""
    return render_template("operators.html")
