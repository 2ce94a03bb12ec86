"""Logging set-up. botocore's DEBUG log prints request headers with credentials: it never goes below INFO,
and a filter scrubs anything that looks like a signature or secret from every record."""

from __future__ import annotations

import logging
import re

_SECRET_RE = re.compile(
    r"(?i)(aws_secret_access_key|secret_access_key|x-amz-security-token|signature|credential|authorization)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^\s'\",;&]+)"
)


class RedactSecrets(logging.Filter):
    """Replaces values of credential-looking fields in a record's message with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _SECRET_RE.search(msg):
            record.msg = _SECRET_RE.sub(r"\1\2***", msg)
            record.args = None
        return True


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # never let the AWS SDK log request headers (they carry credentials and signatures)
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(max(level, logging.INFO if verbosity >= 2 else logging.WARNING))
    # psycopg warns when it drops a pipeline a failed statement aborted: the error itself reaches the user
    logging.getLogger("psycopg").setLevel(logging.ERROR if verbosity <= 0 else level)
