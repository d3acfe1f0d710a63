"""Audio device backends: python-sounddevice (default) and PyAudio.

Both open PortAudio streams whose callbacks only copy between a preallocated :class:`AudioRing`
and the device buffer and record status counters and stream time: no allocation of audio memory,
no locks, no logging, no model calls. What the device actually granted (sample rate, latency) is
read back from the open stream, never assumed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import DeviceError

BACKENDS = ("sounddevice", "pyaudio")


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False


def open_error(direction: str, info: DeviceInfo, samplerate: int, channels: int,
               detail: object, backend: str = "") -> DeviceError:
    """The error for a device that refused to open, with what to try instead."""
    via = f" with {backend}" if backend else ""
    return DeviceError(
        f"could not open {direction} device [{info.index}] '{info.name}' at {samplerate} Hz, "
        f"{channels} channel(s){via}: {detail}. Try another sample rate (its default is "
        f"{info.default_samplerate:.0f} Hz) or device (`audio-engine devices`)")


def get_backend(name: str):
    if name == "sounddevice":
        from . import sounddevice_backend as mod
    elif name == "pyaudio":
        try:
            from . import pyaudio_backend as mod
        except ImportError:
            raise DeviceError(
                "backend 'pyaudio' needs the PyAudio package: pip install 'audio-engine[pyaudio]' "
                "(it compiles against PortAudio's headers: apt-get install portaudio19-dev)"
            ) from None
    else:
        from ..node import did_you_mean

        raise DeviceError(f"unknown audio backend '{name}'{did_you_mean(name, BACKENDS)}; "
                          f"choose one of {', '.join(BACKENDS)}")
    return mod


def list_devices(backend: str = "sounddevice") -> list[DeviceInfo]:
    return get_backend(backend).list_devices()


def resolve_device(devices: list[DeviceInfo], spec: str | int | None, kind: str) -> DeviceInfo:
    """Find a device by index, exact name, or unique substring; ``None``/"default" = default.

    ``kind`` is "input" or "output". Raises a DeviceError listing the devices that would fit.
    """
    want_in = kind == "input"

    def fits(d: DeviceInfo) -> bool:
        return (d.max_input_channels if want_in else d.max_output_channels) > 0

    usable = [d for d in devices if fits(d)]
    listing = "; ".join(f"[{d.index}] {d.name}" for d in usable) or "none"
    if not usable:
        raise DeviceError(f"no audio {kind} device found (PortAudio sees: "
                          f"{', '.join(d.name for d in devices) or 'nothing'}). "
                          "Connect a device, or start PulseAudio, or use --input FILE")
    if spec is None or spec == "default" or spec == "":
        for d in usable:
            if d.default_input if want_in else d.default_output:
                return d
        return usable[0]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        for d in usable:
            if d.index == idx:
                return d
        raise DeviceError(f"no {kind} device with index {idx}; {kind} devices: {listing}. "
                          "List them with `audio-engine devices`")
    exact = [d for d in usable if d.name == spec]
    if exact:
        return exact[0]
    sub = [d for d in usable if spec.lower() in d.name.lower()]
    if len(sub) == 1:
        return sub[0]
    if len(sub) > 1:
        raise DeviceError(f"{kind} device name '{spec}' is ambiguous: matches "
                          f"{', '.join(d.name for d in sub)}; give the index instead")
    from ..node import did_you_mean

    raise DeviceError(f"no {kind} device named '{spec}'"
                      f"{did_you_mean(spec, [d.name for d in usable])}; {kind} devices: "
                      f"{listing}. List them with `audio-engine devices`")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries print on standard error (PortAudio's ALSA host API and alsa-lib
    write a dozen lines for every failed open) while a lost device is being reopened.

    File descriptor 2 is process-wide, so this is held only around the open attempt itself
    (milliseconds), never on the audio path; the engine's own terminal output goes to stdout.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
