"""Flask extensions, created unbound here and bound to an app in `create_app`."""
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for all models (typed SQLAlchemy 2.0)."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
