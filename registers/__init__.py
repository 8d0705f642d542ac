"""Register engine client: models, migrations, psycopg client, errors."""

from registers.client import RegisterClient
from registers.errors import AccumulatorError
from registers.models import RegisterDefinition

__all__ = ["AccumulatorError", "RegisterClient", "RegisterDefinition"]
