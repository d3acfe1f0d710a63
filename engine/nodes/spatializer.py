"""``spatial.hrtf``: binaural rendering of mono sources with an HRTF set (SOFA).

Each channel of the ``audio`` input is one mono source, named and placed by the ``sources``
parameter; the output is binaural stereo. Graph file example::

    [[nodes]]
    id = "space"
    type = "spatial.hrtf"
    in = { audio = "mix.audio", control = "ui.events" }
    params = { sources = [
        { name = "voice", azimuth = 30, distance = 1.5 },
        { name = "bird", azimuth = -60, elevation = 20, orbit_deg_per_s = 45 } ] }

Angles are in degrees: azimuth 0 = front, **positive to the right** (clockwise seen from above;
the SOFA files' counter-clockwise convention is converted internally), elevation positive up,
distance in metres. Listener orientation: ``yaw`` positive = head turned right, ``pitch``
positive = nose up, ``roll`` positive = right ear down.

Positions change at run time through ``Node.control(values)`` (any thread) or ``Control`` events
on the optional ``control`` port (``target`` = this node's id), with values such as
``{"source": "voice", "azimuth": 30, "elevation": 0, "distance": 1.5, "jump": False}`` or
``{"yaw": 20}``. Keys: ``source`` (name or index; optional with one source), ``azimuth``,
``elevation``, ``distance``, ``orbit_deg_per_s``, ``gain_db``, ``jump``, ``yaw``, ``pitch``,
``roll``. ``jump = True`` moves the source without a sweep (one crossfade period).

Real-time rules: ``process`` is allocation-free apart from draining the control mailbox (a
``collections.deque``; append/popleft are atomic, so ``control`` never blocks the audio thread
and the audio thread never waits for a lock). All DSP runs in one Numba ``nogil`` call per block
(:func:`engine.dsp.spatial_kernels.render`). Positions are resolved every ``update_samples``
samples on boundaries of the absolute sample clock, so the output does not depend on the host
block size; a change takes effect at the first boundary at or after the block (``control``) or
the event's sample (``Control`` events) and is crossfaded over one update period. The node adds
no latency: the earliest ear plays ``spatial_kernels.INTERP_HALF`` samples after the input
(the half-length of the fractional delay), a physical propagation delay
``(distance - min_distance) / 343 m/s`` is added when ``doppler`` is on. At the end of the
stream ``flush`` renders what is still on its way (delays and filter tail), so the output is
longer than the input by that much.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dsp import spatial_kernels as sk
from ..dsp.hrtf import SPEED_OF_SOUND, HrtfSet, prepare_hrtf, resolve_sofa
from ..errors import NegotiationError, ParamError
from ..events import Control
from ..node import AUDIO, EVENTS, AudioSpec, Node, NodeIO, did_you_mean, param, register

_SOURCE_KEYS = ("name", "azimuth", "elevation", "distance", "orbit_deg_per_s", "gain_db")
_CONTROL_KEYS = ("source", "azimuth", "elevation", "distance", "orbit_deg_per_s", "gain_db",
                 "jump", "yaw", "pitch", "roll")
#: a delay change above this fraction of the update period (a radial speed above ~34 m/s, or a
#: position step) is rendered as a jump rather than as a pitch sweep
_JUMP_SLEW = 0.1


def check_value(key: str, v: Any, max_distance: float) -> float:
    """Validate one position / orientation value; raise ``ValueError`` saying what is wrong."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key}: must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{key}: is {v}; give a finite number")
    limits = {"elevation": (-90.0, 90.0, "degrees"), "pitch": (-90.0, 90.0, "degrees"),
              "azimuth": (-1e6, 1e6, "degrees"), "yaw": (-1e6, 1e6, "degrees"),
              "roll": (-1e6, 1e6, "degrees"), "orbit_deg_per_s": (-36000.0, 36000.0, "deg/s"),
              "gain_db": (-120.0, 40.0, "dB")}
    if key == "distance":
        if not 0.0 < v <= max_distance:
            raise ValueError(f"distance: {v} m is outside (0, {max_distance}] m (raise "
                             f"max_distance to place sources farther)")
    elif key in limits:
        lo, hi, unit = limits[key]
        if not lo <= v <= hi:
            raise ValueError(f"{key}: {v} is outside {lo:g}..{hi:g} {unit}")
    return v


def parse_source(i: int, s: Any, ref_distance: float, max_distance: float) -> dict[str, Any]:
    """One entry of the ``sources`` parameter, checked and completed with defaults."""
    where = f"sources[{i}]"
    if not isinstance(s, dict):
        raise ValueError(f"{where}: expected a table like {{name = \"voice\", azimuth = 30}}, "
                         f"got {s!r}")
    for k in s:
        if k not in _SOURCE_KEYS:
            raise ValueError(f"{where}: unknown key '{k}'{did_you_mean(k, _SOURCE_KEYS)}; keys "
                             f"are {', '.join(_SOURCE_KEYS)}")
    out: dict[str, Any] = {"name": str(s.get("name", str(i)))}
    defaults = {"azimuth": 0.0, "elevation": 0.0, "distance": ref_distance,
                "orbit_deg_per_s": 0.0, "gain_db": 0.0}
    for k, d in defaults.items():
        try:
            out[k] = check_value(k, s.get(k, d), max_distance)
        except ValueError as e:
            raise ValueError(f"{where}.{e}") from None
    return out


def param_problems(p: Any) -> list[str]:
    """Problems of a Params instance beyond single-value types and ranges."""
    problems = []
    if not p.max_distance > p.min_distance:
        problems.append(f"max_distance: must exceed min_distance ({p.min_distance}), got "
                        f"{p.max_distance}")
    names: list[str] = []
    for i, s in enumerate(p.sources):
        try:
            names.append(parse_source(i, s, p.ref_distance, p.max_distance)["name"])
        except ValueError as e:
            problems.append(str(e))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"sources: names must be unique, {', '.join(dup)} repeated")
    if not p.sources:
        problems.append("sources: give at least one source (one per input channel)")
    if 0 < p.taps < 16:
        problems.append(f"taps: must be 0 (auto) or 16..1024, got {p.taps}")
    if p.hrtf not in ("", "default") and not resolve_sofa(p.hrtf).is_file():
        problems.append(f"hrtf: file {p.hrtf} not found (a SimpleFreeFieldHRIR .sofa file, or "
                        f"'default')")
    return problems


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-to-head matrix (SOFA frame: x front, y left, z up) for the listener orientation."""
    y, p, r = math.radians(-yaw), math.radians(-pitch), math.radians(roll)
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    return (rz @ ry @ rx).T


@register
class HrtfSpatializer(Node):
    """Binaural HRTF spatializer: N mono sources in (one per channel), stereo out."""

    type_name = "spatial.hrtf"
    inputs = {"audio": AUDIO, "control": EVENTS}
    outputs = {"audio": AUDIO}
    optional_inputs = frozenset({"control"})

    @dataclass(frozen=True)
    class Params:
        sources: list[dict] = param(
            [{"name": "source", "azimuth": 0.0}],
            doc="one entry per input channel: {name, azimuth=0, elevation=0, distance=1, "
                "orbit_deg_per_s=0, gain_db=0} (degrees, metres; azimuth positive right)")
        hrtf: str = param("default", doc="SOFA SimpleFreeFieldHRIR file, or 'default' (MIT KEMAR)")
        taps: int = param(0, ge=0, le=1024,
                          doc="minimum-phase filter length in samples; 0 = 128 up to 48 kHz, "
                              "the same 2.7 ms above (256 at 96 kHz)")
        update_samples: int = param(128, ge=16, le=4096,
                                    doc="position update period = crossfade length (samples)")
        yaw: float = param(0.0, ge=-360, le=360, doc="listener yaw, degrees, positive = right")
        pitch: float = param(0.0, ge=-90, le=90, doc="listener pitch, degrees, positive = up")
        roll: float = param(0.0, ge=-180, le=180,
                            doc="listener roll, degrees, positive = right ear down")
        min_distance: float = param(0.25, gt=0, le=10, doc="distance below which gain stops rising")
        ref_distance: float = param(1.0, gt=0, le=100, doc="distance of unit gain (1/r law)")
        max_distance: float = param(50.0, gt=0, le=1000, doc="largest accepted distance (m)")
        doppler: bool = param(True, doc="delay by (distance - min_distance) / c (Doppler)")
        normalize: bool = param(True, doc="scale the set to unit mean energy per ear")
        gain_db: float = param(0.0, ge=-60, le=24, doc="output gain")

    def __init__(self, node_id: str, params: Any):
        super().__init__(node_id, params)
        problems = param_problems(params)
        if problems:
            raise ParamError(f"{node_id} ({self.type_name}): " + "; ".join(problems))
        self._sources = [parse_source(i, s, params.ref_distance, params.max_distance)
                         for i, s in enumerate(params.sources)]
        self._index = {s["name"]: i for i, s in enumerate(self._sources)}
        self._mail: collections.deque = collections.deque()
        self._pending: list[tuple[int, tuple]] = []
        self.hrtf: HrtfSet | None = None
        self._applied = 0
        self._rejected = 0
        self._last_error = ""

    @classmethod
    def validate_params(cls, params: Any) -> list[str]:
        """Problems beyond single-parameter types and ranges (used by graph validation)."""
        return param_problems(params)

    # -- controls (any thread: parsing writes no shared state)
    def _check(self, where: str, key: str, v: Any) -> float:
        try:
            return check_value(key, v, self.params.max_distance)
        except ValueError as e:
            raise ParamError(f"{where}: {e}") from None

    def _parse_control(self, values: dict[str, Any]) -> tuple:
        where = f"{self.id} control"
        if not isinstance(values, dict):
            raise ParamError(f"{where}: expected a dict of values, got {values!r}")
        for k in values:
            if k not in _CONTROL_KEYS:
                raise ParamError(f"{where}: unknown key '{k}'{did_you_mean(k, _CONTROL_KEYS)}; "
                                 f"keys are {', '.join(_CONTROL_KEYS)}")
        src_fields = {k: values[k] for k in ("azimuth", "elevation", "distance",
                                             "orbit_deg_per_s", "gain_db") if k in values}
        lst = {k: self._check(where, k, values[k])
               for k in ("yaw", "pitch", "roll") if k in values}
        idx = -1
        jump = bool(values.get("jump", False))
        if src_fields or "source" in values or jump:
            name = values.get("source")
            if name is None:
                if len(self._sources) != 1:
                    raise ParamError(f"{where}: say which source to move with 'source' (one of "
                                     f"{', '.join(self._index)})")
                idx = 0
            elif isinstance(name, int) and not isinstance(name, bool):
                if not 0 <= name < len(self._sources):
                    raise ParamError(f"{where}: source index {name} is out of range "
                                     f"0..{len(self._sources) - 1}")
                idx = name
            else:
                if str(name) not in self._index:
                    raise ParamError(f"{where}: no source named '{name}'"
                                     f"{did_you_mean(str(name), self._index)}; sources are "
                                     f"{', '.join(self._index)}")
                idx = self._index[str(name)]
            src_fields = {k: self._check(where, k, v) for k, v in src_fields.items()}
        return (idx, src_fields, jump, lst)

    def check_control(self, values: dict[str, Any]) -> None:
        self._parse_control(values)

    def control(self, values: dict[str, Any]) -> None:
        """Queue a position / orientation change (thread-safe, never blocks the audio thread).

        Raises :class:`ParamError` at once for unknown keys or sources and for NaN or
        out-of-range values. Applied at the first update boundary at or after the next block.
        """
        self._mail.append(self._parse_control(values))

    # -- lifecycle
    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        spec = inputs.get("audio")
        if spec is None:
            raise NegotiationError(f"{self.id}.audio is not connected: connect the mono sources "
                                   f"(one channel per source)")
        n = len(self._sources)
        if spec.channels != n:
            names = ", ".join(s["name"] for s in self._sources)
            raise NegotiationError(
                f"{self.id}.audio has {spec.describe()} but the node places {n} source"
                f"{'s' if n != 1 else ''} ({names}): give one entry in 'sources' per input "
                f"channel, or add a dsp.mix with channels = {n} before it")
        # the output block may be longer than the input's once: flush() renders the tail
        return {"audio": AudioSpec(spec.sample_rate, 2,
                                   max(spec.max_block, self._tail_bound(spec.sample_rate)))}

    def _tail_bound(self, fs: int) -> int:
        """Most frames still to come out after the input ends: the largest propagation delay,
        the interaural and onset delays (a few ms) and the filter and interpolator lengths."""
        p = self.params
        prop = (p.max_distance - p.min_distance) / SPEED_OF_SOUND if p.doppler else 0.0
        taps = p.taps or 16 * math.ceil(128 * max(fs, 48000) / 48000 / 16)
        return int(math.ceil(fs * (prop + 0.005))) + taps + 2 * sk.INTERP_TAPS

    def flush(self, io: NodeIO) -> None:
        """End of stream: what is still in the delay lines and filters (the sound on its way
        from a distant source, the far ear's delay, the filter tail) comes out."""
        hs = self.hrtf
        if hs is None:
            io.produced("audio", 0)
            return
        p = self.params
        prop = self._cfg[sk.C_PROP]
        dist = float(np.max(self._tgt[:, sk.T_DIST])) if len(self._tgt) else p.min_distance
        n = int(math.ceil(float(hs.delays.max()) + prop * max(0.0, dist - p.min_distance))) \
            + hs.taps + 2 * sk.INTERP_TAPS
        n = min(n, len(io.out("audio")), len(self._tail_zeros))
        self._render(self._tail_zeros[:n], io.out("audio"), n)
        io.produced("audio", n)

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        p = self.params
        spec = specs["audio"] if "audio" in specs else next(iter(specs.values()))
        fs = spec.sample_rate
        self._fs = fs
        self._max_block = spec.max_block
        taps = p.taps or (128 if fs <= 48000 else 16 * math.ceil(128 * fs / 48000 / 16))
        hs = prepare_hrtf(p.hrtf, fs, taps)
        self.hrtf = hs
        n = len(self._sources)
        per = int(p.update_samples)
        taps = hs.taps
        prop = fs / SPEED_OF_SOUND if p.doppler else 0.0
        max_delay = float(hs.delays.max()) + prop * (p.max_distance - p.min_distance) + 2
        ring_len = 1 << int(math.ceil(math.log2(max_delay + taps + per + 2 * sk.INTERP_TAPS)))
        self._ring = np.zeros((n, 2 * ring_len), np.float32)  # mirrored
        self._hist = np.zeros((n, 2, taps - 1 + per), np.float32)
        self._hist2 = np.zeros_like(self._hist)
        self._hf = np.zeros((n, 2, taps), np.float32)
        self._ht = np.zeros_like(self._hf)
        self._df = np.zeros((n, 2))
        self._dt = np.zeros((n, 2))
        self._mode = np.full(n, sk.MODE_INIT, np.int32)
        self._last = np.zeros((n, 5))
        self._tgt = np.zeros((n, sk.TARGET_COLS))
        self._rot = np.eye(3)
        self._table = sk.interp_table()
        self._scratch = np.zeros(sk.INTERP_TAPS + 2 * per, np.float32)
        self._zeros = np.zeros((min(per, spec.max_block), n), np.float32)
        self._xbuf = np.zeros((spec.max_block, n), np.float32)
        self._tail_zeros = np.zeros((self._tail_bound(fs), n), np.float32)
        cfg = np.zeros(sk.CFG_LEN)
        cfg[sk.C_FS] = fs
        cfg[sk.C_PERIOD] = per
        cfg[sk.C_MIN_DIST] = p.min_distance
        cfg[sk.C_REF_DIST] = p.ref_distance
        cfg[sk.C_PROP] = prop
        cfg[sk.C_JUMP] = _JUMP_SLEW * per
        cfg[sk.C_NORM] = (hs.norm_gain if p.normalize else 1.0) * 10 ** (p.gain_db / 20)
        cfg[sk.C_MAX_DIST] = p.max_distance
        self._cfg = cfg
        # compile / load the kernel and touch every code path before the first real block
        warm = np.zeros((per + 1, 2), np.float32)
        self.reset()
        self._render(self._zeros, warm)
        self._tgt[:, sk.T_JUMP] = 1.0
        self._render(self._zeros, warm)
        self.reset()

    def reset(self) -> None:
        for a in (self._ring, self._hist, self._hist2, self._hf, self._ht, self._df, self._dt,
                  self._last):
            a[...] = 0
        self._mode[:] = sk.MODE_INIT
        for i, s in enumerate(self._sources):
            row = self._tgt[i]
            row[:] = 0.0
            row[sk.T_AZ] = s["azimuth"]
            row[sk.T_EL] = s["elevation"]
            row[sk.T_DIST] = s["distance"]
            row[sk.T_ORBIT] = s["orbit_deg_per_s"]
            row[sk.T_GAIN] = 10 ** (s["gain_db"] / 20)
        self._ypr = [self.params.yaw, self.params.pitch, self.params.roll]
        self._rot[...] = rotation_matrix(*self._ypr)
        self._abs = 0
        self._pending.clear()

    def _render(self, x: np.ndarray, out: np.ndarray, n: int | None = None) -> None:
        """One kernel call for ``n`` frames (default ``len(x)``) into ``out[:n]``."""
        hs = self.hrtf
        n = len(x) if n is None else n
        sk.render(x, n, out, self._abs, self._tgt, self._rot, self._ring, self._hist,
                  self._hist2, self._hf, self._ht, self._df, self._dt, self._mode, self._last,
                  hs.filters_rev, hs.delays, hs.tri, hs.tri_inv, hs.nbr, hs.grid,
                  self._table, self._cfg, self._scratch)
        self._abs += n

    def _apply(self, msg: tuple, at: int) -> None:
        """Write one parsed control into the target rows (audio thread, between kernel calls)."""
        idx, fields, jump, lst = msg
        if idx >= 0:
            row = self._tgt[idx]
            if "orbit_deg_per_s" in fields and "azimuth" not in fields:
                # re-anchor so the source continues from where it is now
                row[sk.T_AZ] += row[sk.T_ORBIT] * (at - row[sk.T_ANCHOR]) / self._fs
                row[sk.T_ANCHOR] = at
            if "azimuth" in fields:
                row[sk.T_AZ] = fields["azimuth"]
                row[sk.T_ANCHOR] = at
            if "orbit_deg_per_s" in fields:
                row[sk.T_ORBIT] = fields["orbit_deg_per_s"]
            if "elevation" in fields:
                row[sk.T_EL] = fields["elevation"]
            if "distance" in fields:
                row[sk.T_DIST] = fields["distance"]
            if "gain_db" in fields:
                row[sk.T_GAIN] = 10 ** (fields["gain_db"] / 20)
            if jump:
                row[sk.T_JUMP] = 1.0
        if lst:
            for i, k in enumerate(("yaw", "pitch", "roll")):
                if k in lst:
                    self._ypr[i] = lst[k]
            self._rot[...] = rotation_matrix(*self._ypr)
        self._applied += 1

    def process(self, io: NodeIO) -> None:
        x = io.audio("audio")
        out = io.out("audio")
        n = len(x)
        if not x.flags.c_contiguous or x.dtype != np.float32:
            # a strided view would make Numba compile a new specialisation on the audio thread
            np.copyto(self._xbuf[:n], x)
            x = self._xbuf[:n]
        while self._mail:
            self._apply(self._mail.popleft(), self._abs)
        for ev in io.events("control"):
            if not isinstance(ev, Control) or (ev.target and ev.target != self.id):
                continue
            try:
                msg = self._parse_control(dict(ev.values))
            except ParamError as e:  # a bad event must not stop the audio: count it
                self._rejected += 1
                self._last_error = str(e)
                continue
            per = int(self._cfg[sk.C_PERIOD])
            at = -(-int(ev.sample) // per) * per  # first update boundary at/after the event
            self._pending.append((at, msg))
        if self._pending:
            self._pending.sort(key=lambda am: am[0])
        pos = 0
        end = self._abs + n
        while self._pending and self._pending[0][0] < end:
            at, msg = self._pending.pop(0)
            split = at - self._abs
            if split > 0:
                self._render(x[pos: pos + split], out[pos: pos + split])
                pos += split
            self._apply(msg, max(at, self._abs))
        if pos == 0:
            self._render(x, out, n)  # the common case: no views, no allocation
        elif pos < n:
            self._render(x[pos:], out[pos:n])
        io.produced("audio", n)

    def stats(self) -> dict[str, Any]:
        hs = self.hrtf
        return {"sources": len(self._sources), "hrtf": hs.name if hs else "",
                "controls_applied": self._applied, "controls_rejected": self._rejected,
                "last_control_error": self._last_error}
