"""Patterns for the names that end up in upstream URLs, checked before any I/O.

Strict on purpose: a resource name becomes part of the upstream host, a
deployment name and an api-version part of the path and query.
"""

from __future__ import annotations

import re

__all__ = [
    "API_VERSION_RE",
    "DEPLOYMENT_RE",
    "MAX_SHOWN_CHARS",
    "MODEL_RE",
    "RESOURCE_RE",
]

# Letters, digits and inner hyphens: no host, port, path, '@', '.' or '%'.
RESOURCE_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")
# Azure deployment names: letters, digits, '-', '_', '.'; a leading '.' could
# make a path segment like '..', so the first character must be alphanumeric.
DEPLOYMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Model names as clients send them; the separators of the token format excluded.
MODEL_RE = re.compile(r"[^\s|,:]{1,256}")
# How much of a name a client chose (a model) is logged or becomes a metric
# label: as long as the longest deployment name, enough for any real model.
MAX_SHOWN_CHARS = 64
# Dated GA or preview versions, or Azure's version-less v1 API. ASCII digits
# only: `\d` would also match Arabic-Indic or fullwidth digits, which Azure
# does not read as a date.
API_VERSION_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?|v1")
