"""`taskservice migrate | api | worker | webhooks`."""

from __future__ import annotations

import argparse
import logging
import sys

from taskservice import logs
from taskservice.config import ConfigError
from taskservice.config_loader import load_config


def _migrate(config) -> None:
    from taskservice.store.migrate import migrate

    applied = migrate(config.database_url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")


def _api(config) -> None:
    from gunicorn.app.wsgiapp import WSGIApplication

    config.check_api()
    sys.argv = ["gunicorn", "--config", "python:taskservice.gunicorn_conf", "taskservice.wsgi:app"]
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()


def _worker(config) -> None:
    from taskservice.worker.main import run_worker

    run_worker(config)


def _webhooks(config) -> None:
    from taskservice.webhooks.dispatcher import run_dispatcher

    run_dispatcher(config)


COMMANDS = {"migrate": _migrate, "api": _api, "worker": _worker, "webhooks": _webhooks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskservice", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        # Plain text: the log format is not known yet (LOG_FORMAT may be the bad value).
        print(f"taskservice: configuration error: {exc}", file=sys.stderr)
        return 2
    # Before anything logs; gunicorn's own loggers join the same handler (gunicorn_logging.py),
    # so every line of the process has one format.
    logs.configure(config.log_format)
    try:
        COMMANDS[args.command](config)
    except ConfigError as exc:  # a setting only this command needs (the API's JWT secret)
        logging.getLogger("taskservice").critical("configuration error: %s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
