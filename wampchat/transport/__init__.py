"""Transports: WebSocket, RawSocket, memory, and the web site that hosts them."""
