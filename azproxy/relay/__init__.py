"""The way of one HTTP request, in the order it travels: the handler
(dispatch by scope, relay), the body read whole within bounds
(request_body) or relayed as it arrives (uploads), what is sent where
(target), how it is tried (attempts: retries or failover), one send, and
the answer (response) relayed chunk by chunk (stream); beside them the pure
pieces they use (backends, mapping, families, headers, sse, terminal
events, multipart, splices, the deployment health board, the upstream
slots)."""
