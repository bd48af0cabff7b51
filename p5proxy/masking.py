"""Secrets out of text that people read: URL passwords and secret-looking query parameters.

One masker for every place that shows a connection URL (/health, logs, the admin page), so a
Redis or database URL looks the same wherever it appears: `redis://:****@cache:6379/0`. The
user name stays (it is not a secret, and tells accounts apart).
"""

from __future__ import annotations

import re

__all__ = ["mask_text"]

# the password runs to the `@`: a `/` in it (unencoded) must not end it and leave the rest
# shown; a port followed by a path with an `@` in it is masked too, which only hides more
_URL_USERINFO = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?P<pre>[?&][^=&#\s]*(?:key|token|secret|password|passwd|auth|sig)[^=&#\s]*=)[^&#\s]+",
    re.IGNORECASE)


def mask_text(text: str) -> str:
    """Mask URL passwords and secret query parameters inside any string."""
    if "://" not in text and "=" not in text:
        return text
    text = _URL_USERINFO.sub(r"\g<pre>****@", text)
    return _QUERY_SECRET.sub(r"\g<pre>****", text)
