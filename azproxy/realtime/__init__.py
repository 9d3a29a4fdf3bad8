"""Realtime: the WebSocket handshake with Azure and the frame relay
between the two sockets."""
