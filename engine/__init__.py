"""audio-engine: real-time streaming audio (captions, voice activity, sound events, HRTF)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Engine", "load_graph"]


def __getattr__(name: str):
    """``from engine import Engine`` without importing numpy & co. for ``import engine``."""
    if name == "Engine":
        from .runtime import Engine

        return Engine
    if name == "load_graph":
        from .graph import load_graph

        return load_graph
    raise AttributeError(name)
