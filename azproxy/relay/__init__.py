"""The way of one HTTP request, in the order it travels: the handler
(dispatch by scope), the body read within bounds, the target (what is sent
where), the attempts (retries or failover), one send, and the answer relayed
chunk by chunk; beside them the pure pieces they use (mapping, families,
headers, sse, terminal events, multipart, splices, the deployment health
board, the upstream slots)."""
