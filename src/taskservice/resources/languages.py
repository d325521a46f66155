import falcon

from taskservice.config import Config
from taskservice.store.languages import LanguageVersionStore


class LanguagesResource:
    def __init__(self, config: Config, versions: LanguageVersionStore):
        self._config = config
        self._versions = versions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        config = self._config
        # Versions are what the workers found in the images; null until a worker has started.
        versions = self._versions.versions()
        resp.media = {
            "languages": [
                {
                    "name": language.name,
                    "version": versions.get(language.name),
                    "default_timeout": config.task_timeout_default,
                    "max_timeout": config.task_timeout_max,
                    "default_memory_mb": language.default_memory_mb(config.task_memory_mb),
                    "max_memory_mb": config.task_memory_max_mb,
                }
                for language in config.languages.values()
            ]
        }
