"""Helpers the tests share: fault injection between components."""
