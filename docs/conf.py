"""Sphinx configuration: the API reference, built from the docstrings (``nox -s docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "trio_smtp"
author = "trio_smtp contributors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# No network while building: the standard library and Trio are named, not linked.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
# Type hints name classes from other libraries (trio, ssl, email); only our own must resolve.
nitpicky = False
suppress_warnings = ["ref.python"]
napoleon_use_ivar = True
