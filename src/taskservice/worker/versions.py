"""Finding each language's version in its image and recording it for ``GET /languages``."""

from __future__ import annotations

import logging

from taskservice.config import Config
from taskservice.errors import DatabaseUnavailable
from taskservice.sandbox import SandboxFailure, SandboxUnavailable
from taskservice.store.languages import LanguageVersionStore

log = logging.getLogger(__name__)


class VersionReporter:
    def __init__(self, config: Config, sandbox, versions: LanguageVersionStore):
        self._config = config
        self._sandbox = sandbox
        self._versions = versions
        self._reported: set[str] = set()

    def report(self) -> bool:
        """Probe and record each language not done yet; True once all are done."""
        for language in self._config.languages.values():
            if language.name in self._reported:
                continue
            try:
                version = self._sandbox.probe_version(language)
                self._versions.report(language.name, language.image, version)
            except (SandboxUnavailable, SandboxFailure, DatabaseUnavailable) as exc:
                log.warning("could not report %s's version yet: %s", language.name, exc)
                continue
            self._reported.add(language.name)
            log.info("%s in %s is version %s", language.name, language.image, version)
        return len(self._reported) == len(self._config.languages)
