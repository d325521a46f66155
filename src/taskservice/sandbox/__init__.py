"""The sandbox: one fresh, locked-down Docker container per task. Knows nothing of the database
or the broker; the worker hands it a ``SandboxJob`` and gets a ``RunOutcome`` back.
"""

from taskservice.sandbox.docker_sandbox import DockerSandbox, docker_client
from taskservice.sandbox.errors import SandboxFailure, SandboxUnavailable
from taskservice.sandbox.spec import SandboxJob, SandboxSettings

__all__ = [
    "DockerSandbox",
    "SandboxFailure",
    "SandboxJob",
    "SandboxSettings",
    "SandboxUnavailable",
    "docker_client",
]
