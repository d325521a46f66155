"""The sandbox's two ways of failing, which the worker treats differently."""


class SandboxUnavailable(Exception):
    """The Docker engine could not be used; nothing is known about the user's code. Retryable."""


class SandboxFailure(Exception):
    """The sandbox cannot run this task at all (a missing image, say). Not retryable."""
