"""The process: running the app on sockets, the connection-level guards
(header and keep-alive timeouts, max_connections), closing connections
after a last response, the open-file limit, and --workers supervision."""
