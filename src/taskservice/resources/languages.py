import falcon

from taskservice.config import Config


class LanguagesResource:
    def __init__(self, config: Config):
        self._body = {
            "languages": [
                {
                    "name": language.name,
                    "version": language.version,
                    "default_timeout": config.task_timeout_default,
                    "max_timeout": config.task_timeout_max,
                    "default_memory_mb": config.task_memory_mb,
                    "max_memory_mb": config.task_memory_max_mb,
                }
                for language in config.languages.values()
            ]
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._body
