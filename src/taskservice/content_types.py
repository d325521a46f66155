"""The content type of an artifact, from its bytes and its name. Pure functions.

Images are told by their magic bytes, whatever their name says. Text types need both: the
extension names the kind (CSV, JSON, HTML, ...) and the bytes must be UTF-8, so a binary file
called ``data.csv`` is served as ``application/octet-stream``, not as text a browser would try
to render. SVG and HTML can run script in a browser: the artifact route serves them as
attachments (``served_as_attachment``), never inline in the service's origin.
"""

from __future__ import annotations

import hashlib
import re

from taskservice.model import ArtifactInfo, TaskFile

OCTET_STREAM = "application/octet-stream"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"
SVG = "image/svg+xml"
HTML = "text/html; charset=utf-8"

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"GIF87a", GIF),
    (b"GIF89a", GIF),
)
# By extension, for bytes that are valid UTF-8.
_TEXT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "log": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "py": "text/plain; charset=utf-8",
    "sh": "text/plain; charset=utf-8",
    "html": HTML,
    "htm": HTML,
    "svg": SVG,
}
# An SVG document: optional BOM, XML declaration, comments or a doctype, then <svg.
_SVG_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:(?:<!--(?:(?!-->).)*-->|<!DOCTYPE[^>]*>)\s*)*<svg[\s>]",
    re.IGNORECASE | re.DOTALL,
)
_SNIFF_BYTES = 4096
# Types a browser could run script in, were they shown in the service's origin.
_ACTIVE_TYPES = frozenset({SVG, HTML})


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.lstrip(".") else ""


def _is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sniff(name: str, content: bytes) -> str:
    """The content type to serve ``content`` with; ``application/octet-stream`` if unknown."""
    for magic, content_type in _MAGIC:
        if content.startswith(magic):
            return content_type
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return WEBP
    if _SVG_START.match(content[:_SNIFF_BYTES]) and _is_utf8(content):
        return SVG  # whatever its name: an SVG must never be served inline
    text_type = _TEXT_TYPES.get(_extension(name))
    if text_type is not None and _is_utf8(content):
        return text_type
    return OCTET_STREAM


def served_as_attachment(content_type: str) -> bool:
    """Whether a browser must download rather than show it: it could run script."""
    return content_type in _ACTIVE_TYPES


def describe(artifact: TaskFile) -> ArtifactInfo:
    """The listing of one artifact: its size, sniffed type and SHA-256."""
    return ArtifactInfo(
        name=artifact.name,
        size=len(artifact.content),
        content_type=sniff(artifact.name, artifact.content),
        sha256=hashlib.sha256(artifact.content).hexdigest(),
    )
