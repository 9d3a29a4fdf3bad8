"""The front door every request passes before the relay: errors rendered in
OpenAI's shape, admission (draining, CORS, credentials), readiness and
graceful shutdown, and the endpoints azproxy answers itself (/v1/models)."""
