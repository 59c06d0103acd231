"""Keep credentials written into URIs out of what lmpipe stores or prints.

pyarrow accepts credentials inside a URI (``s3://KEY:SECRET@bucket/corpus.txt``, or query options such as
``?access_key=...&secret_key=...``).  The run keeps the URI as given, in memory, so it can open the files;
everything that outlives the process or reaches a terminal -- ``RUN/spec.yaml``, manifests (inputs,
sources, ``host.argv``), error lines -- goes through :func:`redact` first::

    >>> redact("s3://AKIA:s3cr3t@bucket/a.txt?region=us-east-1&secret_key=s3cr3t")
    's3://REDACTED@bucket/a.txt?region=us-east-1&secret_key=REDACTED'
"""

from __future__ import annotations

import re
from typing import Any

MASK = "REDACTED"

#: ``scheme://userinfo@``: RFC 3986 userinfo holds no '/', '?', '#' or '@' (a '/' in a secret is %2F).
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'\"]+@")
#: Query options that carry a credential (pyarrow's S3/GCS options, presigned-URL signatures, tokens).
_SECRET_QUERY = re.compile(
    r"([?&](?:access_key|secret_key|session_token|password|passwd|token|access_token|credentials?|sig|signature"
    r"|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by ``REDACTED``."""
    if "://" not in text:
        return text
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", _USERINFO.sub(rf"\g<1>{MASK}@", text))


def redact_data(value: Any) -> Any:
    """:func:`redact` applied to every string (keys included) of JSON-like data; other values unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
