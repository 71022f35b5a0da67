"""``python -m cachewarm``: the same command as ``cachewarm``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
