"""WSGI entry point: `flask --app app …` and any WSGI server use this."""
from parking import create_app

app = create_app()
