"""What azproxy tells operators: the record of each exchange (exchange), the
token usage read from answers (usage), closing each exchange with its
x-request-id (observer) into the access log (access_log) and the Prometheus
metrics (metrics), and logging with redaction (logging)."""
