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
