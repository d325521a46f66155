"""The WSGI entry point for gunicorn: ``taskservice.wsgi:app``.

Building the app opens no connection; the pool and the publisher connect on first use, inside
each forked worker process.
"""

from taskservice.app import get_app

app = get_app()
