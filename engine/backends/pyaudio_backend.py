"""PyAudio backend (``backend = "pyaudio"``), PortAudio's callback mode.

Same rules as the sounddevice backend: callbacks copy between the device buffer and a preallocated
ring and count status, nothing else. PyAudio hands the callback ``bytes`` and wants ``bytes`` back,
so the input side views the buffer with ``np.frombuffer`` (no copy) and the output side fills a
preallocated array and returns its bytes (the one small copy PyAudio's API forces).
"""

from __future__ import annotations

import atexit
import os
import threading

import numpy as np
import pyaudio

from ..errors import DeviceError
from ..ring import AudioRing
from . import DeviceInfo, open_error, resolve_device
from .stream_stats import CallbackStats

_pa: pyaudio.PyAudio | None = None
_pa_lock = threading.Lock()


def _instance() -> pyaudio.PyAudio:
    global _pa
    with _pa_lock:
        if _pa is None:
            # PortAudio prints ALSA probing noise on stderr while initialising; keep it quiet.
            fd = os.dup(2)
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
                _pa = pyaudio.PyAudio()
            finally:
                os.dup2(fd, 2)
                os.close(fd)
            atexit.register(_pa.terminate)
        return _pa


def list_devices() -> list[DeviceInfo]:
    pa = _instance()
    try:
        d_in = pa.get_default_input_device_info()["index"]
    except OSError:
        d_in = -1
    try:
        d_out = pa.get_default_output_device_info()["index"]
    except OSError:
        d_out = -1
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        api = pa.get_host_api_info_by_index(d["hostApi"])["name"]
        out.append(DeviceInfo(
            index=i, name=d["name"], hostapi=api,
            max_input_channels=int(d["maxInputChannels"]),
            max_output_channels=int(d["maxOutputChannels"]),
            default_samplerate=float(d["defaultSampleRate"]),
            default_input=(i == d_in), default_output=(i == d_out)))
    return out


class _Stream:
    def __init__(self, stream, stats: CallbackStats, device: DeviceInfo, samplerate: int):
        self._stream = stream
        self.stats = stats
        self.device = device
        self._rate = samplerate

    @property
    def samplerate(self) -> float:
        return float(self._rate)

    @property
    def latency(self) -> float:
        try:
            return float(self._stream.get_input_latency() or self._stream.get_output_latency())
        except OSError:
            return 0.0

    @property
    def active(self) -> bool:
        try:
            return bool(self._stream.is_active())
        except OSError:
            return False

    def start(self) -> None:
        try:
            self._stream.start_stream()
        except OSError as e:
            msg = f"could not start audio stream on '{self.device.name}': {e}"
            raise DeviceError(msg) from None

    def stop(self) -> None:
        try:
            self._stream.stop_stream()
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass


def open_input(device, samplerate: int, channels: int, blocksize: int, ring: AudioRing,
               latency="low") -> _Stream:
    pa = _instance()
    info = resolve_device(list_devices(), device, "input")
    stats = CallbackStats()
    clock, record = stats.clock, stats.record
    write = ring.write
    frombuffer = np.frombuffer
    f32 = np.float32
    cont = pyaudio.paContinue

    def callback(in_data, frame_count, time_info, status):  # audio thread: copy + count only
        t0 = clock()
        write(frombuffer(in_data, f32).reshape(frame_count, channels))
        if status & pyaudio.paInputOverflow:
            stats.input_overflows += 1
        if status & pyaudio.paInputUnderflow:
            stats.input_underflows += 1
        record(t0, frame_count, time_info["input_buffer_adc_time"])
        return (None, cont)

    try:
        stream = pa.open(format=pyaudio.paFloat32, channels=channels, rate=samplerate,
                         input=True, input_device_index=info.index,
                         frames_per_buffer=blocksize, stream_callback=callback, start=False)
    except (OSError, ValueError) as e:
        raise open_error("input", info, samplerate, channels, e, "PyAudio") from None
    return _Stream(stream, stats, info, samplerate)


def open_output(device, samplerate: int, channels: int, blocksize: int, ring: AudioRing,
                latency="low", prime_frames: int = 0, backlog: tuple[int, int] = (0, 0)
                ) -> _Stream:
    pa = _instance()
    info = resolve_device(list_devices(), device, "output")
    stats = CallbackStats()
    clock, record = stats.clock, stats.record
    # PyAudio may ask for any frame count; keep a generous preallocated scratch buffer
    scratch = np.zeros((max(blocksize, 1) * 16, channels), np.float32)
    read_into, trim = ring.read_into, ring.trim
    cont = pyaudio.paContinue
    stats.priming = prime_frames
    stats.backlog_limit, stats.backlog_keep = backlog

    def callback(in_data, frame_count, time_info, status):  # audio thread: copy + count only
        t0 = clock()
        out = scratch[:frame_count]
        if stats.priming and ring.available < stats.priming:
            out.fill(0)
        else:
            stats.priming = 0
            if stats.backlog_limit:  # catch up after a stall: an index move, no copy (beyond
                trim(stats.backlog_limit + frame_count, stats.backlog_keep + frame_count)
            read_into(out, True)
        if status & pyaudio.paOutputUnderflow:
            stats.output_underflows += 1
        record(t0, frame_count, time_info["output_buffer_dac_time"])
        return (out.tobytes(), cont)

    try:
        stream = pa.open(format=pyaudio.paFloat32, channels=channels, rate=samplerate,
                         output=True, output_device_index=info.index,
                         frames_per_buffer=blocksize, stream_callback=callback, start=False)
    except (OSError, ValueError) as e:
        raise open_error("output", info, samplerate, channels, e, "PyAudio") from None
    return _Stream(stream, stats, info, samplerate)
