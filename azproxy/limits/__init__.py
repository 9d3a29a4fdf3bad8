"""Per access key limits: rpm, tpm, max_concurrent and token quotas.

windows (the pure arithmetic), store (the counters behind one interface),
admission (one request: admitted, then settled).
"""
