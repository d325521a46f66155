# gunicorn settings for running the API directly (`gunicorn -c gunicorn.conf.py
# taskservice.wsgi:app`); `taskservice api` uses the same module.
from taskservice.gunicorn_conf import *  # noqa: F403
