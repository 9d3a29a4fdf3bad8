"""What azproxy tells operators: the record of each exchange, the access
log, Prometheus metrics, and logging with redaction."""
