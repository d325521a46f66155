"""The worker process: queue consumer, task runner and Docker sandbox."""
