"""Register engine client: models, migrations, psycopg client, errors."""
