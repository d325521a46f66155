"""gunicorn settings, read from the same Config as everything else."""

from taskservice.config import load_config

_config = load_config()

bind = f"{_config.host}:{_config.port}"
workers = _config.api_workers
worker_class = "gthread"
threads = _config.api_threads
# A request in flight gets this long to finish after SIGTERM.
graceful_timeout = 30
timeout = 60
keepalive = 5
accesslog = "-"
errorlog = "-"
# Its logs in the service's format, on stderr, access lines included (gunicorn_logging.py).
logger_class = "taskservice.gunicorn_logging.GunicornLogger"
# Nothing is opened before the fork: each worker builds its own pool and publisher.
preload_app = False
