"""The admin API of sensor credentials (contract §7): create, list, revoke; bearer token throughout."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

from ..auth import require_admin
from ..credentials import CredentialError, add, listing, revoke
from ..extensions import Blueprint
from ..validation import IdFormat

blp = Blueprint("credentials", __name__, url_prefix="/api/credentials",
                description="Sensors' OSCORE credentials (admin)")

_ID = dict(validate=IdFormat())


class CredentialCreateSchema(Schema):
    """A sensor to provision and the bays it reports."""

    sensor_id = fields.String(required=True, **_ID)
    bays = fields.List(fields.String(**_ID), required=True, validate=validate.Length(min=1, max=1000))
    replace = fields.Boolean(load_default=False, metadata={"description": "revoke the sensor's current credential"})


class SettingsSchema(Schema):
    """The sensor's side of its OSCORE context, as aiocoap's settings.json."""

    class Meta:
        ordered = True

    sender_id_hex = fields.String(data_key="sender-id_hex")
    recipient_id_hex = fields.String(data_key="recipient-id_hex")
    secret_hex = fields.String(data_key="secret_hex")
    salt_hex = fields.String(data_key="salt_hex")


class CredentialSchema(Schema):
    """A credential as listed: no secret."""

    sensor_id = fields.String()
    key_id = fields.String(metadata={"description": "the sensor's OSCORE Sender ID, hex"})
    bays = fields.List(fields.String())
    created_at = fields.String()
    revoked_at = fields.String(allow_none=True)


class CreatedSchema(Schema):
    """A fresh credential; `settings` holds the secret and is shown this once."""

    sensor_id = fields.String()
    key_id = fields.String()
    bays = fields.List(fields.String())
    settings = fields.Nested(SettingsSchema)


class ListArgsSchema(Schema):
    """Which credentials to list."""

    all = fields.Boolean(load_default=False, metadata={"description": "revoked ones too"})


def _settings_fields(made: dict) -> dict:
    """The settings dict keyed by the schema's attribute names."""
    settings = made["settings"]
    return {**made, "settings": {key.replace("-", "_"): value for key, value in settings.items()}}


@blp.route("")
class CredentialsView(MethodView):
    """All credentials."""

    @require_admin
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, CredentialSchema(many=True))
    @blp.doc(security=[{"bearerAuth": []}])
    def get(self, args):
        """Credentials in force (all=true: revoked too), without secrets (admin)."""
        return listing(include_revoked=args["all"])

    @require_admin
    @blp.arguments(CredentialCreateSchema)
    @blp.response(201, CreatedSchema)
    @blp.doc(security=[{"bearerAuth": []}])
    def post(self, args):
        """Create a sensor's credential bound to its bays; the answer shows the secret once (admin)."""
        try:
            made = add(args["sensor_id"], args["bays"], replace=args["replace"])
        except CredentialError as exc:
            abort(exc.status, message=exc.message)
        return _settings_fields(made)


@blp.route("/<sensor_id>")
class CredentialView(MethodView):
    """One sensor's credential."""

    @require_admin
    @blp.response(200, CredentialSchema)
    @blp.doc(security=[{"bearerAuth": []}])
    def delete(self, sensor_id):
        """Revoke the sensor's credential: its key is refused (4.01) from now on (admin)."""
        try:
            return revoke(sensor_id)
        except CredentialError as exc:
            abort(exc.status, message=exc.message)
