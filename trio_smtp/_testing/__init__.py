"""The heavy half of :mod:`trio_smtp.testing`: imported only when a helper is used.

:mod:`trio_smtp.testing` is also the pytest plugin that every pytest run in an
environment with trio_smtp installed loads; it must stay cheap, so everything that
imports Trio or the server lives here and is re-exported from there lazily.
"""
