"""Flask extensions, created unbound here and bound to an app in `create_app`; API customisation."""
import flask_smorest
from flask.json.provider import DefaultJSONProvider
from flask_migrate import Migrate
from marshmallow import Schema, fields
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from webargs.flaskparser import FlaskParser


class Base(DeclarativeBase):
    """Declarative base for all models (typed SQLAlchemy 2.0)."""


class ErrorSchema(Schema):
    """Every HTTP error's body (parking/errors.py makes it)."""

    code = fields.Integer(required=True, metadata={"description": "the HTTP status code"})
    status = fields.String(required=True, metadata={"description": "its name"})
    message = fields.String(required=True, metadata={"description": "what is wrong, naming the argument"})


class Api(flask_smorest.Api):
    """flask-smorest's Api, documenting the error body this app really sends."""

    ERROR_SCHEMA = ErrorSchema


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()


class _ArgumentsParser(FlaskParser):
    """Bad query arguments are a client's 400, as the contract says (webargs defaults to 422)."""

    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(flask_smorest.Blueprint):
    """The API's blueprint class: flask-smorest's, with 400 for invalid arguments."""

    ARGUMENTS_PARSER = _ArgumentsParser()


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with a body nested too deeply for the parser counted as malformed.

    json.loads raises RecursionError (not ValueError) on e.g. 2,000 '[': without this a 500."""

    def loads(self, s, **kwargs):
        """Parse JSON; nesting past the interpreter's recursion limit is a ValueError (a 400)."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc
