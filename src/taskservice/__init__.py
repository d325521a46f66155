"""Task Service: run untrusted code snippets in locked-down containers behind an HTTP API."""

__version__ = "0.1.0"
