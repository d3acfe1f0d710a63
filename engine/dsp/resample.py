"""Stateful streaming polyphase resampler (Kaiser-windowed sinc, Numba ``nogil`` kernel).

The rate ratio is reduced by the gcd to ``up / down`` (48000 -> 16000 is 1/3, 44100 -> 16000 is
160/441). One linear-phase low-pass prototype of ``N = 2 * D * down + 1`` taps is designed at the
virtual rate ``up * in_rate`` and split into ``up`` phases of ``K = ceil(N / up)`` taps; each
output sample is one ``K``-tap dot product against the last ``K`` input frames.

Design (``quality``), edges relative to the Nyquist frequency of the *lower* of the two rates;
the Kaiser length estimate ``N ~ (A - 7.95) / (2.285 * transition)`` is rounded up to the next
``2 * D * down + 1``:

=========  =========  ========  ===========  ===========  =====================================
quality    passband   stopband  attenuation  Kaiser beta  taps per output (48k->16k, 44.1k->16k)
=========  =========  ========  ===========  ===========  =====================================
``high``   0 .. 0.90  1.00 ..   100 dB       10.06        391, 359  (cutoff 0.95)
``fast``   0 .. 0.80  1.00 ..   80 dB        7.86         157, 144  (cutoff 0.90)
=========  =========  ========  ===========  ===========  =====================================

The stopband starts at the lower Nyquist frequency, so nothing aliases into the output band when
downsampling and images are suppressed by the full attenuation when upsampling. Passband ripple is
of the same order as the stopband level (about 1e-5 for ``high``).

Timing: output frame ``k + latency_out`` corresponds to input time ``k / out_rate`` exactly
(``latency_out`` is an integer number of output frames: the filter length is chosen so that the
group delay falls on an output sample). The stream starts from silence, so the first
``latency_out`` frames are the filter's run-in. After ``flush`` the total output length is
``latency_out + ceil(n_in * out_rate / in_rate)``; dropping the first ``latency_out`` frames
gives the same length and alignment as ``scipy.signal.resample_poly``.

Real-time rules: ``process`` and ``flush`` do not allocate, lock or log; the kernel releases the
GIL. Output is bit-identical whatever the sequence of block sizes (including 0 and 1), because each
output frame is computed by the same compiled dot product from the same input frames regardless of
how the input was split (the dot product is SIMD-reassociated with ``fastmath``, so results may
differ in the last bit between CPUs, never between block sizes). Everything that allocates
(filter design, buffers, kernel compilation) happens in the constructor.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: quality presets: (passband edge, stopband edge, stopband attenuation in dB), edges relative to
#: the Nyquist frequency of the lower rate
QUALITY: dict[str, tuple[float, float, float]] = {
    "high": (0.90, 1.00, 100.0),
    "fast": (0.80, 1.00, 80.0),
}

# input frames buffered per channel beyond the K-1 frames of history; compaction (a memmove of
# K-1 frames per channel) happens once per this many input frames
_CHUNK = 8192


def kaiser_beta(atten_db: float) -> float:
    """Kaiser's empirical window parameter for a stopband attenuation of ``atten_db`` dB."""
    a = float(atten_db)
    if a > 50.0:
        return 0.1102 * (a - 8.7)
    if a >= 21.0:
        return 0.5842 * (a - 21.0) ** 0.4 + 0.07886 * (a - 21.0)
    return 0.0


def reduce_ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    """``(up, down)``: ``out_rate / in_rate`` reduced by the gcd (48000 -> 16000 gives (1, 3))."""
    g = math.gcd(int(in_rate), int(out_rate))
    return int(out_rate) // g, int(in_rate) // g


def filter_plan(up: int, down: int, quality: str = "high") -> tuple[int, int, float, float]:
    """Size the prototype for ``up / down`` (coprime) without designing it (cheap, pure).

    Returns ``(n_taps, delay, beta, cutoff)``: ``n_taps = 2 * delay * down + 1`` is the Kaiser
    length estimate rounded up so that the group delay is ``delay`` whole output frames; ``beta``
    is the Kaiser parameter; ``cutoff`` (-6 dB point) is relative to the lower Nyquist.
    """
    if quality not in QUALITY:
        raise ValueError(f"quality must be one of {tuple(QUALITY)}, got {quality!r}")
    f_pass, f_stop, atten = QUALITY[quality]
    r = max(up, down)
    beta = kaiser_beta(atten)
    # transition width in rad/sample at the virtual rate: the lower Nyquist is pi / r there
    dw = math.pi * (f_stop - f_pass) / r
    n_min = int(math.ceil((atten - 7.95) / (2.285 * dw))) + 1
    delay = max(1, int(math.ceil((n_min - 1) / (2 * down))))
    return 2 * delay * down + 1, delay, beta, 0.5 * (f_pass + f_stop)


def design_filter(
    up: int, down: int, quality: str = "high"
) -> tuple[np.ndarray, int, float, float]:
    """Design the prototype low-pass filter for resampling by ``up / down`` (coprime).

    Returns ``(h, delay, beta, cutoff)`` as :func:`filter_plan`, with ``h`` float64 of odd length
    at the virtual rate ``up * in_rate`` and DC gain ``up`` (it compensates zero-stuffing).
    Uses numpy only (``np.kaiser``, ``np.sinc``).
    """
    n, delay, beta, cutoff = filter_plan(up, down, quality)
    fc = cutoff / (2 * max(up, down))  # cycles per sample at the virtual rate
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2
    h = 2.0 * fc * np.sinc(2.0 * fc * t) * np.kaiser(n, beta)
    h *= up / h.sum()
    return h, delay, beta, cutoff


def stream_sizes(in_rate: int, out_rate: int, n_in: int, quality: str = "high") -> tuple[int, int]:
    """``(max_output(n_in), latency_out)`` of a :class:`StreamingResampler` without building it
    (for ``negotiate``)."""
    up, down = reduce_ratio(in_rate, out_rate)
    if up == down:
        return int(n_in), 0
    return -(-int(n_in) * up // down), filter_plan(up, down, quality)[1]


def polyphase_table(h: np.ndarray, up: int) -> np.ndarray:
    """Split ``h`` into ``up`` phases, each reversed so that the kernel's dot product runs
    forward over the input: ``table[p, i] = h[p + (K - 1 - i) * up]`` (zero past the end)."""
    k = -(-len(h) // up)
    hp = np.zeros(k * up, dtype=np.float64)
    hp[: len(h)] = h
    table = hp.reshape(k, up).T[:, ::-1]
    return np.ascontiguousarray(table, dtype=np.float32)


# state vector layout (int64)
_WPOS, _NABS, _PHASE, _N_IN, _N_OUT = range(5)


@njit(nogil=True, cache=True, fastmath=True)
def _poly_kernel(x, out, table, buf, st, up, down):  # pragma: no cover - compiled
    """Consume all of ``x`` (n, ch); write every output frame that became computable to ``out``.

    ``buf`` (ch, K - 1 + chunk) holds K-1 frames of history followed by new input; ``st`` holds
    the write column, the buffer column of the newest input frame the next output needs, the
    phase of the next output, and the total input/output frame counts.
    """
    k = table.shape[1]
    ch = buf.shape[0]
    cap = buf.shape[1]
    n = x.shape[0]
    wpos = st[0]
    nabs = st[1]
    phase = st[2]
    produced = 0
    i = 0
    while i < n:
        if wpos == cap:
            shift = cap - (k - 1)
            for c in range(ch):
                for j in range(k - 1):
                    buf[c, j] = buf[c, shift + j]
            wpos = k - 1
            nabs -= shift
        take = min(n - i, cap - wpos)
        for j in range(take):
            for c in range(ch):
                buf[c, wpos + j] = x[i + j, c]
        wpos += take
        i += take
        while nabs < wpos:
            row = table[phase]
            base = nabs - k + 1
            for c in range(ch):
                seg = buf[c, base:base + k]
                acc = np.float32(0.0)
                for j in range(k):
                    acc += row[j] * seg[j]
                out[produced, c] = acc
            produced += 1
            phase += down
            nabs += phase // up
            phase = phase % up
    st[0] = wpos
    st[1] = nabs
    st[2] = phase
    st[3] += n
    st[4] += produced
    return produced


@njit(nogil=True, cache=True)
def _copy_kernel(x, out):  # pragma: no cover - compiled
    n = x.shape[0]
    for i in range(n):
        for c in range(x.shape[1]):
            out[i, c] = x[i, c]
    return n


class StreamingResampler:
    """Resample a float32 ``(frames, channels)`` stream from ``in_rate`` to ``out_rate``.

    ``process(x, out)`` consumes all of ``x`` (any length, 0 included) and writes the output
    frames that became available to the start of ``out`` (which must have at least
    ``max_output(len(x))`` rows); it returns how many. ``flush(out)`` drains the tail at end of
    stream; ``reset()`` starts a new stream. ``in_rate == out_rate`` is an exact copy with no
    delay. See the module docstring for the filter design and timing.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = "high"):
        in_rate, out_rate, channels = int(in_rate), int(out_rate), int(channels)
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be > 0, got {in_rate} -> {out_rate}")
        if channels <= 0:
            raise ValueError(f"channels must be > 0, got {channels}")
        if quality not in QUALITY:
            raise ValueError(f"quality must be one of {tuple(QUALITY)}, got {quality!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self.quality = quality
        #: reduced ratio: out_rate / in_rate == up / down
        self.up, self.down = reduce_ratio(in_rate, out_rate)
        self.passthrough = self.up == self.down
        if self.passthrough:
            self.taps = np.ones(1, np.float64)
            self.beta = 0.0
            self.cutoff = 1.0
            self.latency_out = 0
            self._table = np.ones((1, 1), np.float32)
        else:
            self.taps, self.latency_out, self.beta, self.cutoff = design_filter(
                self.up, self.down, quality)
            self._table = polyphase_table(self.taps, self.up)
        #: taps per output frame (the dot-product length)
        self.taps_per_phase = self._table.shape[1]
        k = self.taps_per_phase
        self._buf = np.zeros((channels, k - 1 + _CHUNK), np.float32)
        self._st = np.zeros(5, np.int64)
        # flush: zeros fed after the last input, and room for the tail it produces
        self._zeros = np.zeros((self._flush_zeros_bound(), channels), np.float32)
        #: frames ``flush`` writes in all: the group delay's worth of tail
        self.max_flush = self.latency_out
        self._tail = np.zeros((self.max_output(len(self._zeros)) + 1, channels), np.float32)
        self._tail_len = 0
        self._tail_pos = 0
        self._flushed = False
        self.reset()
        self._warm()

    # -- sizes
    def max_output(self, n_in: int) -> int:
        """The most frames ``process`` can write for ``n_in`` input frames, in any state:
        ``ceil(n_in * up / down)``."""
        return -(-int(n_in) * self.up // self.down)

    def output_length(self, n_in: int) -> int:
        """Total output frames for a whole stream of ``n_in`` input frames after ``flush``."""
        return self.max_output(n_in) + self.latency_out

    def _flush_zeros_bound(self) -> int:
        if self.passthrough:
            return 1
        # target output index < ceil(n*up/down) + D needs input index floor(((t-1)*down)/up)
        # < n + z, so z <= (D + 1) * down / up + 2
        return (self.latency_out + 1) * self.down // self.up + 2

    # -- streaming
    def reset(self) -> None:
        """Clear history and phase: the next ``process`` starts a new stream from silence."""
        k = self.taps_per_phase
        self._buf[:] = 0.0
        self._st[:] = 0
        self._st[_WPOS] = k - 1
        self._st[_NABS] = k - 1
        self._tail_len = 0
        self._tail_pos = 0
        self._flushed = False

    def process(self, x: np.ndarray, out: np.ndarray) -> int:
        """Resample ``x`` (n, channels) float32 into ``out``; return the frames written.

        Real-time safe: no allocation, GIL released in the kernel. ``out`` needs at least
        ``max_output(len(x))`` rows.
        """
        if x.shape[0] == 0:
            return 0
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) input, got {x.shape}")
        if out.shape[0] < self.max_output(x.shape[0]):
            raise ValueError(f"out has {out.shape[0]} rows, need {self.max_output(x.shape[0])}")
        if self.passthrough:
            n = _copy_kernel(x, out)
            self._st[_N_IN] += n
            self._st[_N_OUT] += n
            return n
        return _poly_kernel(x, out, self._table, self._buf, self._st, self.up, self.down)

    def flush(self, out: np.ndarray) -> int:
        """End of stream: write the remaining output frames (the filter's tail) into ``out``.

        Returns the frames written; call again while it returns ``len(out)`` if ``out`` is
        shorter than ``max_flush``. After flushing, call ``reset()`` before the next stream.
        No allocation.
        """
        if self.passthrough:
            return 0
        if not self._flushed:
            self._flushed = True
            st = self._st
            target = self.output_length(int(st[_N_IN]))
            need = target - int(st[_N_OUT])
            if need > 0:
                last_in = ((target - 1) * self.down) // self.up  # input index of last output
                z = max(0, last_in + 1 - int(st[_N_IN]))
                got = _poly_kernel(self._zeros[:z], self._tail, self._table, self._buf, st,
                                   self.up, self.down)
                self._tail_len = min(got, need)
            self._tail_pos = 0
        n = min(len(out), self._tail_len - self._tail_pos)
        if n > 0:
            out[:n] = self._tail[self._tail_pos:self._tail_pos + n]
            self._tail_pos += n
        return n

    @property
    def frames_in(self) -> int:
        """Input frames consumed since the last reset."""
        return int(self._st[_N_IN])

    @property
    def frames_out(self) -> int:
        """Output frames produced by ``process`` (and internally by ``flush``) since reset."""
        return int(self._st[_N_OUT])

    def _warm(self) -> None:
        """Compile (or load from the Numba cache) the kernel for contiguous and strided float32
        blocks, so the first real ``process`` call does not compile on the DSP thread."""
        out = np.zeros((self.max_output(2), self.channels), np.float32)
        x = np.zeros((4, self.channels), np.float32)
        self.process(x[:1], out)
        self.process(x[::2], out)
        self.reset()

    def describe(self) -> str:
        if self.passthrough:
            return f"{self.in_rate} Hz -> {self.out_rate} Hz: pass-through"
        return (f"{self.in_rate} Hz -> {self.out_rate} Hz ({self.up}/{self.down}), "
                f"{self.quality}: {len(self.taps)} taps, {self.taps_per_phase} per output, "
                f"Kaiser beta {self.beta:.2f}, cutoff {self.cutoff:.3f} x lower Nyquist, "
                f"delay {self.latency_out} output frames")
