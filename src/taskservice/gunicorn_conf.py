"""gunicorn settings, read from the same Config as everything else."""

from taskservice.config_loader import load_config
from taskservice.metrics.multiprocess import MultiprocessDirectory

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

# The API's processes add up their metrics in one directory (taskservice.metrics.multiprocess):
# made or emptied in the master before the first fork, each dead process marked, removed at exit.
_metrics_dir = MultiprocessDirectory(_config.prometheus_multiproc_dir)


def on_starting(server):
    _metrics_dir.prepare()


def child_exit(server, worker):
    _metrics_dir.process_died(worker.pid)


def on_exit(server):
    _metrics_dir.remove()


def post_worker_init(worker):
    # A request held by `?wait=` would keep a stopping process for up to MAX_WAIT_SECONDS, past
    # the graceful timeout: on SIGTERM, answer the held requests first, then stop as usual.
    import signal

    from taskservice.waits import end_all_waits

    stop = signal.getsignal(signal.SIGTERM)

    def end_waits_then_stop(signum, frame):
        end_all_waits()
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, end_waits_then_stop)
