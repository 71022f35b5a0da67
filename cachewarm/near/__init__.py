"""The near cache: hot values kept in process memory, dropped the moment Redis pushes a change (issue 14).

store.py holds the bounded local copies, link.py the tracking connection Redis pushes changes on, cache.py the rule
that ties them together (what may be served, what may be kept).
"""
