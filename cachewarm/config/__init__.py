"""Configuration below the settings: the keyspaces (keyspaces.py, the TOML file) and their sources (sources.py:
HTTP and ``python:`` sources, and the hooks integrations register to run before a ``python:`` source is
imported). `cachewarm.settings` loads both."""
