"""Server URLs as they may be printed: with any password masked (the Redis layer's errors name the URL they
could not use; settings, the CLI and the outbox print theirs the same way)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form in which URLs are printed or logged."""
    if ";" in url:  # Celery's failover form: sentinel://...;sentinel://...
        return ";".join(mask_url(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    masked = f"{user}:***@{hostport}" if user or ":" in userinfo else f"***@{hostport}"
    return urlunsplit((parts.scheme, masked, parts.path, parts.query, parts.fragment))


def unavailable(what: str, url: str, exc: BaseException) -> str:
    """``WHAT unavailable at URL (Error: message)``: the URL masked, any password the message repeats masked too,
    on one line. Every command and process says a server failed in this form."""
    message = " ".join(str(exc).split())[:300]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        message = message.replace(password, "***")
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{what} unavailable at {mask_url(url)} ({detail})"
