"""A bare Falcon app: the API benchmark's baseline, served under the service's gunicorn settings.

Its two endpoints have the shape of the real ones (a GET answering a small JSON document, a POST
parsing a JSON body and answering 201) and do nothing else: no token, no database, no broker.
What the real endpoints cost beyond these is the service's own.
"""

import uuid

import falcon


class BareStatus:
    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        resp.media = {"task_id": str(task_id), "status": "queued"}


class BareSubmit:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.get_media()
        task_id = uuid.uuid4()
        resp.status = falcon.HTTP_201
        resp.location = f"/status/{task_id}"
        resp.media = {"task_id": str(task_id), "status": "queued"}


class BareRoot:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "bare"


app = falcon.App()
app.add_route("/", BareRoot())
app.add_route("/status/{task_id:uuid}", BareStatus())
app.add_route("/task", BareSubmit())
