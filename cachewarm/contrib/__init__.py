"""Integrations with the frameworks writers already use: `cachewarm.contrib.sqlalchemy` (extra
``cachewarm[sqlalchemy]``) and `cachewarm.contrib.django` (extra ``cachewarm[django]``). Importing this package
imports neither framework."""
