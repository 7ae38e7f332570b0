"""Unbound extension objects; create_app() binds them."""

from flask_migrate import Migrate
from flask_smorest import Api

from marketplace.database import db

migrate = Migrate()
api = Api()

__all__ = ["api", "db", "migrate"]
