"""Pieces every stage shares: settings, the CLI wrapper, atomic file writes, printed tables.

Nothing here knows about coral: it is the plumbing beneath the stages, so that each of them
loads settings, reports errors and writes files the same way.
"""
