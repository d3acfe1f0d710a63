"""audio-engine: real-time streaming audio (captions, voice activity, sound events, HRTF)."""

from __future__ import annotations

__version__ = "0.1.0"
