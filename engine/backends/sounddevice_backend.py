"""python-sounddevice backend (the default).

The callbacks below are the engine's only code on the audio thread. They copy between the device
buffer and a preallocated :class:`~engine.ring.AudioRing`, record the stream time and status flags,
and time themselves into a preallocated array. Nothing else.
"""

from __future__ import annotations

import sounddevice as sd

from ..errors import DeviceError
from ..ring import AudioRing
from . import DeviceInfo, open_error, resolve_device
from .stream_stats import CallbackStats


def list_devices() -> list[DeviceInfo]:
    try:
        devs = sd.query_devices()
        apis = sd.query_hostapis()
        d_in, d_out = sd.default.device
    except sd.PortAudioError as e:
        raise DeviceError(f"PortAudio could not list devices: {e}") from None
    out = []
    for i, d in enumerate(devs):
        out.append(DeviceInfo(
            index=i, name=d["name"], hostapi=apis[d["hostapi"]]["name"],
            max_input_channels=d["max_input_channels"],
            max_output_channels=d["max_output_channels"],
            default_samplerate=d["default_samplerate"],
            default_input=(i == d_in), default_output=(i == d_out)))
    return out


class _Stream:
    def __init__(self, stream: sd._StreamBase, stats: CallbackStats, device: DeviceInfo):
        self._stream = stream
        self.stats = stats
        self.device = device

    @property
    def samplerate(self) -> float:
        return float(self._stream.samplerate)

    @property
    def latency(self) -> float:
        return float(self._stream.latency)

    @property
    def active(self) -> bool:
        try:
            return bool(self._stream.active)
        except sd.PortAudioError:  # closed (e.g. while a lost device is being reopened)
            return False

    def start(self) -> None:
        try:
            self._stream.start()
        except sd.PortAudioError as e:
            msg = f"could not start audio stream on '{self.device.name}': {e}"
            raise DeviceError(msg) from None

    def stop(self) -> None:
        try:
            self._stream.stop()
        except sd.PortAudioError:
            pass

    def close(self) -> None:
        try:
            self._stream.close()
        except sd.PortAudioError:
            pass


def input_callback(ring: AudioRing, stats: CallbackStats):
    """The capture callback: copy ``indata`` into ``ring``, count status, time itself."""
    clock, write, record = stats.clock, ring.write, stats.record

    def callback(indata, frames, time_info, status):  # audio thread: copy + count only
        t0 = clock()
        write(indata)
        if status:
            if status.input_overflow:
                stats.input_overflows += 1
            if status.input_underflow:
                stats.input_underflows += 1
        record(t0, frames, time_info.inputBufferAdcTime)

    return callback


def output_callback(ring: AudioRing, stats: CallbackStats):
    """The playback callback: fill ``outdata`` from ``ring`` (zero-fill on underrun); while
    ``stats.priming`` frames are not yet buffered it plays silence so playback starts whole."""
    clock, read_into, record, trim = stats.clock, ring.read_into, stats.record, ring.trim

    def callback(outdata, frames, time_info, status):  # audio thread: copy + count only
        t0 = clock()
        if stats.priming and ring.available < stats.priming:
            outdata.fill(0)
        else:
            stats.priming = 0
            if stats.backlog_limit:  # catch up after a stall: an index move, no copy (beyond
                trim(stats.backlog_limit + frames, stats.backlog_keep + frames)  # this call's)
            read_into(outdata, True)
        if status and status.output_underflow:
            stats.output_underflows += 1
        record(t0, frames, time_info.outputBufferDacTime)

    return callback


def open_input(device, samplerate: int, channels: int, blocksize: int, ring: AudioRing,
               latency="low") -> _Stream:
    info = resolve_device(list_devices(), device, "input")
    stats = CallbackStats()
    callback = input_callback(ring, stats)

    try:
        stream = sd.InputStream(device=info.index, samplerate=samplerate, channels=channels,
                                blocksize=blocksize, dtype="float32", latency=latency,
                                callback=callback)
    except (sd.PortAudioError, ValueError) as e:
        raise open_error("input", info, samplerate, channels, e) from None
    return _Stream(stream, stats, info)


def open_output(device, samplerate: int, channels: int, blocksize: int, ring: AudioRing,
                latency="low", prime_frames: int = 0, backlog: tuple[int, int] = (0, 0)
                ) -> _Stream:
    info = resolve_device(list_devices(), device, "output")
    stats = CallbackStats()
    stats.priming = prime_frames
    stats.backlog_limit, stats.backlog_keep = backlog
    callback = output_callback(ring, stats)

    try:
        stream = sd.OutputStream(device=info.index, samplerate=samplerate, channels=channels,
                                 blocksize=blocksize, dtype="float32", latency=latency,
                                 callback=callback)
    except (sd.PortAudioError, ValueError) as e:
        raise open_error("output", info, samplerate, channels, e) from None
    return _Stream(stream, stats, info)
