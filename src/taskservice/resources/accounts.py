import falcon

from taskservice import validation
from taskservice.services import Accounts


class RegisterResource:
    def __init__(self, accounts: Accounts):
        self._accounts = accounts

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        username, password = validation.credentials(req.get_media())
        user = self._accounts.register(username, password)
        resp.status = falcon.HTTP_201
        # The new account, as its owner reads it once logged in (GET /me).
        resp.location = "/me"
        resp.media = {"id": str(user.id), "username": user.username}


class LoginResource:
    def __init__(self, accounts: Accounts):
        self._accounts = accounts

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        username, password = validation.credentials(req.get_media())
        issued = self._accounts.login(username, password)
        # A credential: no cache along the way, nor the browser's, may keep a copy.
        resp.cache_control = ["no-store"]
        resp.media = {
            "token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
