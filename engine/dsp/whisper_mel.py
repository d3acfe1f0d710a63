"""Whisper's log-mel spectrogram as Numba kernels, for whole arrays and for streaming.

Definition (OpenAI Whisper / faster-whisper ``FeatureExtractor``): 16 kHz audio, ``n_fft`` 400,
hop 160, periodic Hann window, ``center=True`` STFT with reflect padding of 200 samples on each
side after 160 zeros have been appended to the audio, power spectrum ``|X|^2`` through a Slaney
mel filter bank (librosa ``htk=False, norm="slaney"``, 0..8000 Hz, 80 or 128 bands), then::

    raw  = log10(max(mel, 1e-10))
    norm = (max(raw, raw.max() - 8) + 4) / 4

An audio of ``N`` samples gives ``N // 160 + 1`` frames; frame ``k`` is centred on sample
``160 * k`` and covers samples ``[160k - 200, 160k + 200)``. faster-whisper then feeds only the
first ``N // 160`` frames to the encoder (the last one is dropped), but the ``max - 8`` floor is
taken over all ``N // 160 + 1``.

Streaming (:class:`StreamingLogMel`): frame ``k`` depends only on samples up to its window end
``160k + 200`` (the left reflect padding of the first frame uses samples 1..200), so it is
emitted as soon as those samples have arrived; :meth:`StreamingLogMel.finish` emits the last
frames with the same end padding as the whole-array function. Streaming frames are *raw*
(``log10``, not floored, not normalised): the global ``max - 8`` floor depends on every frame of
the utterance, so it is applied per utterance / decode window when the window is decoded
(:func:`normalize_log_mel`). Using the maximum over the same frames that the whole-array
function sees gives bit-for-bit the same features as :func:`log_mel_spectrogram`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba as nb
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
PAD_END = 160  # zeros faster-whisper appends before the STFT
LOG_FLOOR = 1e-10


# ---------------------------------------------------------------------------------------------
# filters and window


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz)
                    / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=8)
def mel_filters(n_mels: int = 80, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised mel filter bank ``[n_mels, n_fft // 2 + 1]`` (float32), 0..sr/2 Hz.

    The same filters as ``librosa.filters.mel(sr, n_fft, n_mels)``, which Whisper ships as
    ``mel_filters.npz`` and faster-whisper rebuilds with numpy.
    """
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mels = np.linspace(0.0, float(_hz_to_mel(sr / 2.0)), n_mels + 2)
    freqs = _mel_to_hz(mels)
    fdiff = np.diff(freqs)
    ramps = freqs[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (freqs[2:n_mels + 2] - freqs[:n_mels])
    weights *= enorm[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=2)
def _hann(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (``np.hanning(n + 1)[:-1]``), float32 as faster-whisper uses it."""
    w = np.hanning(n + 1)[:-1].astype(np.float32)
    w.setflags(write=False)
    return w


def _factor(n: int) -> np.ndarray:
    f = []
    for p in (4, 2, 3, 5):
        while n % p == 0:
            f.append(p)
            n //= p
    p = 7
    while n > 1:
        while n % p == 0:
            f.append(p)
            n //= p
        p += 2
    return np.array(f, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# kernels


@nb.njit(cache=True)
def _twiddle_fft(xr, xi, yr, yi, factors, tw_r, tw_i, roots_r, roots_i):  # pragma: no cover
    """In-place mixed-radix Stockham autosort DIF FFT of ``(xr, xi)`` (``y*`` is scratch).

    Stage ``f`` of radix ``p`` turns length-``n`` sub-transforms at stride ``s`` into length
    ``m = n/p`` ones: ``y[k + s(pq + j)] = w_n^{jq} * sum_r x[k + s(q + rm)] w_p^{jr}``, with
    the twiddles ``tw[f, j*m + q] = w_n^{jq}`` and the roots ``roots[e] = w_N^e`` precomputed.
    """
    n_total = xr.shape[0]
    n = n_total
    s = 1
    src_is_x = True
    for f in range(factors.shape[0]):
        p = factors[f]
        m = n // p
        if src_is_x:
            ar, ai, br, bi = xr, xi, yr, yi
        else:
            ar, ai, br, bi = yr, yi, xr, xi
        for q in range(m):
            for j in range(p):
                wr = tw_r[f, j * m + q]
                wi = tw_i[f, j * m + q]
                for k in range(s):
                    accr = 0.0
                    acci = 0.0
                    for r in range(p):
                        idx = k + s * (q + r * m)
                        e = ((j * r) % p) * (n_total // p)
                        cr = roots_r[e]
                        ci = roots_i[e]
                        vr = ar[idx]
                        vi = ai[idx]
                        accr += vr * cr - vi * ci
                        acci += vr * ci + vi * cr
                    o = k + s * (p * q + j)
                    br[o] = accr * wr - acci * wi
                    bi[o] = accr * wi + acci * wr
        n = m
        s *= p
        src_is_x = not src_is_x
    if not src_is_x:
        for i in range(n_total):
            xr[i] = yr[i]
            xi[i] = yi[i]


@nb.njit(cache=True)
def _frames_raw_log_mel(padded, first, count, window, filters, band_lo, band_hi, factors, tw_r,
                        tw_i, roots_r, roots_i, out):  # pragma: no cover - compiled
    """Raw log10 mel of ``count`` frames; frame ``i`` starts at ``padded[(first + i) * HOP]``.

    ``out`` is ``[n_mels, >= count]`` float32; column ``i`` receives frame ``first + i``.
    Filter ``m`` is non-zero only on bins ``band_lo[m]:band_hi[m]``.
    """
    n_fft = window.shape[0]
    n_bins = filters.shape[1]
    n_mels = filters.shape[0]
    xr = np.empty(n_fft)
    xi = np.empty(n_fft)
    yr = np.empty(n_fft)
    yi = np.empty(n_fft)
    power = np.empty(n_bins, dtype=np.float32)
    for i in range(count):
        start = (first + i) * HOP
        for t in range(n_fft):
            # float32 product as in faster-whisper (frame * window in float32)
            xr[t] = np.float32(padded[start + t] * window[t])
            xi[t] = 0.0
        _twiddle_fft(xr, xi, yr, yi, factors, tw_r, tw_i, roots_r, roots_i)
        for b in range(n_bins):
            # complex64 magnitude squared
            re = np.float32(xr[b])
            im = np.float32(xi[b])
            power[b] = re * re + im * im
        for m in range(n_mels):
            acc = 0.0
            for b in range(band_lo[m], band_hi[m]):
                acc += filters[m, b] * power[b]
            v = np.float32(acc)
            if v < LOG_FLOOR:
                v = np.float32(LOG_FLOOR)
            out[m, i] = np.float32(math.log10(v))


@lru_cache(maxsize=4)
def _fft_plan(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    factors = _factor(n)
    tw_r = np.zeros((len(factors), n))
    tw_i = np.zeros((len(factors), n))
    size = n
    for f, p in enumerate(factors):
        m = size // p
        j = np.arange(p)[:, None]
        q = np.arange(m)[None, :]
        ang = -2.0 * np.pi * (j * q) / size
        tw_r[f, :p * m] = np.cos(ang).ravel()
        tw_i[f, :p * m] = np.sin(ang).ravel()
        size = m
    k = np.arange(n)
    roots_r = np.cos(-2.0 * np.pi * k / n)
    roots_i = np.sin(-2.0 * np.pi * k / n)
    return factors, tw_r, tw_i, roots_r, roots_i


@lru_cache(maxsize=8)
def _bands(n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero bin range ``[lo, hi)`` of every mel filter."""
    f = mel_filters(n_mels)
    nz = f != 0
    lo = np.where(nz.any(1), nz.argmax(1), 0).astype(np.int64)
    hi = np.where(nz.any(1), f.shape[1] - nz[:, ::-1].argmax(1), 0).astype(np.int64)
    return lo, hi


def _kernel_args(n_mels: int) -> tuple:
    factors, tw_r, tw_i, roots_r, roots_i = _fft_plan(N_FFT)
    lo, hi = _bands(n_mels)
    return _hann(), mel_filters(n_mels), lo, hi, factors, tw_r, tw_i, roots_r, roots_i


def fft_numba(x: np.ndarray) -> np.ndarray:
    """Complex FFT through the Numba kernel (for tests of the kernel itself)."""
    x = np.asarray(x)
    n = x.shape[0]
    factors, tw_r, tw_i, roots_r, roots_i = _fft_plan(n)
    xr = np.ascontiguousarray(x.real, dtype=np.float64).copy()
    xi = np.ascontiguousarray(x.imag if np.iscomplexobj(x) else np.zeros(n), dtype=np.float64)
    xi = xi.copy()
    _twiddle_fft(xr, xi, np.empty(n), np.empty(n), factors, tw_r, tw_i, roots_r, roots_i)
    return xr + 1j * xi


# ---------------------------------------------------------------------------------------------
# whole arrays


def _pad_whole(audio: np.ndarray, padding: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32).ravel()
    if padding:
        x = np.concatenate([x, np.zeros(padding, np.float32)])
    half = N_FFT // 2
    if x.shape[0] <= half:
        # numpy's reflect pad repeats the reflection for very short inputs; keep its behaviour
        return np.pad(x, (half, half), mode="reflect")
    return np.concatenate([x[half:0:-1], x, x[-2:-half - 2:-1]])


def raw_log_mel(audio: np.ndarray, n_mels: int = 80, padding: int = PAD_END) -> np.ndarray:
    """``log10(max(mel, 1e-10))`` of every frame: ``[n_mels, (N + padding) // 160]`` float32."""
    padded = _pad_whole(audio, padding)
    n_frames = (padded.shape[0] - N_FFT) // HOP + 1 - 1  # faster-whisper drops the last STFT frame
    out = np.empty((n_mels, max(n_frames, 0)), dtype=np.float32)
    if n_frames > 0:
        _frames_raw_log_mel(padded, 0, n_frames, *_kernel_args(n_mels), out)
    return out


def normalize_log_mel(raw: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """Whisper's normalisation: ``(max(raw, max - 8) + 4) / 4`` (``max`` over ``raw`` if None)."""
    if raw.size == 0:
        return raw.astype(np.float32)
    top = np.float32(raw.max() if max_value is None else max_value)
    return ((np.maximum(raw, top - np.float32(8.0)) + np.float32(4.0)) / np.float32(4.0)).astype(
        np.float32)


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = PAD_END
                        ) -> np.ndarray:
    """Whisper log-mel of a whole 16 kHz array, ``[n_mels, N // 160 + 1]`` float32.

    Equal (to float32 rounding) to ``faster_whisper.feature_extractor.FeatureExtractor(
    feature_size=n_mels)(audio)``; the encoder input is its first ``N // 160`` frames.
    """
    return normalize_log_mel(raw_log_mel(audio, n_mels, padding))


# ---------------------------------------------------------------------------------------------
# streaming


class StreamingLogMel:
    """Incremental raw log-mel frames of a 16 kHz stream (see the module docstring).

    ``push(samples)`` returns the frames completed by those samples, ``finish()`` the remaining
    frames of the utterance (with the end padding of the whole-array function) and resets the
    state for the next utterance. Concatenating everything returned for one utterance equals
    :func:`raw_log_mel` of the whole utterance.
    """

    def __init__(self, n_mels: int = 80):
        self.n_mels = int(n_mels)
        self._args = _kernel_args(self.n_mels)
        self.reset()

    def reset(self) -> None:
        """Forget the current utterance."""
        self._buf = np.zeros(0, dtype=np.float32)  # samples [self._buf_start, ...)
        self._buf_start = 0  # absolute index of _buf[0]
        self._n_samples = 0
        self._next_frame = 0

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far for the current utterance."""
        return self._next_frame

    def _compute(self, padded: np.ndarray, padded_start: int, first: int, count: int
                 ) -> np.ndarray:
        """Frames ``first..first+count`` from ``padded`` whose [0] is padded-index ``padded_start``.

        Padded index ``t`` is absolute sample ``t - 200``.
        """
        out = np.empty((self.n_mels, count), dtype=np.float32)
        if count <= 0:
            return out
        off = first * HOP - padded_start
        _frames_raw_log_mel(padded[off:], 0, count, *self._args, out)
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the newly completed raw log-mel frames ``[n_mels, k]``."""
        x = np.asarray(samples, dtype=np.float32).ravel()
        self._buf = np.concatenate([self._buf, x])
        self._n_samples += x.shape[0]
        half = N_FFT // 2
        n = self._n_samples
        # frame k is complete once samples up to 160k + 200 (exclusive) have arrived; frame 0
        # also needs sample 200 for its left reflect padding
        n_ready = (n - half) // HOP + 1 if n > half else 0
        first = self._next_frame
        count = n_ready - first
        if count <= 0:
            return np.empty((self.n_mels, 0), np.float32)
        if first * HOP - half < self._buf_start:
            # start of the utterance: [reflect(samples 200..1) | samples]
            padded = np.concatenate([self._buf[half:0:-1], self._buf])
            padded_start = 0
        else:
            padded = self._buf
            padded_start = self._buf_start + half  # padded index of _buf[0]
        out = self._compute(padded, padded_start, first, count)
        self._next_frame += count
        # drop the samples no later frame needs (frame k starts at sample 160k - 200)
        keep_from = self._next_frame * HOP - half
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:].copy()
            self._buf_start = keep_from
        return out

    def peek(self, padding: int = PAD_END) -> np.ndarray:
        """The frames :meth:`finish` would return now, without ending the utterance (pushing
        more samples afterwards goes on as if this had not been called)."""
        state = (self._buf, self._buf_start, self._n_samples, self._next_frame)
        try:
            return self.finish(padding)
        finally:
            self._buf, self._buf_start, self._n_samples, self._next_frame = state

    def finish(self, padding: int = PAD_END) -> np.ndarray:
        """The utterance's remaining frames (end padding as :func:`raw_log_mel`); then reset."""
        n = self._n_samples
        total = (n + padding) // HOP  # frames of raw_log_mel
        half = N_FFT // 2
        if total <= self._next_frame:
            self.reset()
            return np.empty((self.n_mels, 0), np.float32)
        if self._next_frame == 0:
            # nothing emitted yet, all samples buffered: the whole-array path (short inputs)
            out = raw_log_mel(self._buf, self.n_mels, padding)
            self.reset()
            return out
        tail = np.concatenate([self._buf, np.zeros(padding, np.float32)])
        tail = np.concatenate([tail, tail[-2:-half - 2:-1]])
        padded_start = self._buf_start + half
        if self._next_frame * HOP - half < self._buf_start:
            # the next frame still reaches into the left reflect padding
            tail = np.concatenate([self._buf[half:0:-1], tail])
            padded_start = 0
        out = self._compute(tail, padded_start, self._next_frame, total - self._next_frame)
        self.reset()
        return out
