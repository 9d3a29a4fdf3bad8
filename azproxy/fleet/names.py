"""The names of everything azproxy keeps in Redis, under redis_prefix.

Redis Cluster (Azure Managed Redis is clustered) places a key by the part of
its name inside the first `{...}`, its hash tag, and a script may only touch
keys of one slot. So everything one script call touches shares one tag:

- `PREFIX:{board}:deployments`: the deployment board, one hash (a field per
  deployment). Its state changes seldom (a 429, a breaker) and a joining
  process reads it whole, so one key serves better than one per deployment.
- `PREFIX:{key:TAG}:NAME`: the counters of one access key (the gateway's
  limits and quota), where TAG is the key's configured name (a key with
  limits must have one), or a digest of a name that could break the tag: an
  access key itself never names a key.
- `PREFIX:events`: the channel that carries changes to every process.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["Names"]

# What may appear inside a hash tag as it is; anything else is hashed, so a
# name cannot close the tag or smuggle in another.
_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Names:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.board = f"{prefix}:{{board}}:deployments"
        self.events = f"{prefix}:events"

    def key_tag(self, name: str) -> str:
        """The hash tag of an access key with a configured name."""
        if not _PLAIN.fullmatch(name):
            return self._tag("h-" + self._digest(name.encode()))
        return self._tag("n-" + name)

    def counter(self, tag: str, what: str) -> str:
        """One of an access key's counters, in its hash tag's slot."""
        return f"{tag}:{what}"

    def _tag(self, inner: str) -> str:
        return f"{self.prefix}:{{key:{inner}}}"

    def _digest(self, value: bytes) -> str:
        # 128 bits: no two names meet by chance. Only configured names are
        # digested (a limited key must have one): never an access key itself.
        mac = hmac.new(self.prefix.encode(), value, hashlib.sha256)
        return mac.hexdigest()[:32]
