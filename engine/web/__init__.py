"""Live web view and WebSocket API (``audio-engine run GRAPH --serve``); see :mod:`.server`."""
