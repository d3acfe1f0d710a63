"""YAMNet's log-mel front end as a streaming Numba kernel.

The recipe is YAMNet's published ``features.py`` (tensorflow/models, research/audioset/yamnet)
with its ``params.py`` defaults:

* 16 kHz mono input;
* STFT frames of 25 ms (400 samples) every 10 ms (160 samples), **no centring padding** (frame ``k``
  covers samples ``[160 k, 160 k + 400)``, as ``tf.signal.stft`` with ``pad_end=False``);
* periodic Hann window of 400 samples, FFT length 512 (the frame is zero-padded at the end),
  magnitude spectrum (257 bins);
* 64 mel bands, HTK mel scale (``1127 ln(1 + f / 700)``), 125-7500 Hz, triangular filters built
  in the mel domain with the DC bin zeroed (``tf.signal.linear_to_mel_weight_matrix``);
* ``log(mel + 0.001)``;
* patches of 96 frames (0.96 s) every ``patch_hop`` frames (default 48 = 0.48 s). Patch ``p``
  needs samples ``[p * hop * 160, p * hop * 160 + 15600)``.

At end of stream :meth:`YamnetFeatures.finish` pads with zeros exactly as YAMNet's
``pad_waveform`` does, so a streamed clip yields the same patches as YAMNet's offline pass.

:func:`reference_log_mel` and :func:`reference_patches` state the same recipe in plain NumPy
(``np.fft.rfft``, float64); they are the oracle of the tests and the offline path of benchmarks.

Real-time rules: :meth:`YamnetFeatures.push` allocates nothing per call beyond the generator
object; the per-sample work is one ``nogil`` Numba kernel that writes into preallocated rings.
The output never depends on how the input is split into blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
NFFT = 512
NBINS = NFFT // 2 + 1
NMELS = 64
FMIN = 125.0
FMAX = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
#: samples one patch needs: 95 hops plus one window (YAMNet's ``min_waveform_seconds``)
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WINDOW

# frames computed per kernel call at most; bounds the frame ring (see YamnetFeatures.push)
_CHUNK_FRAMES = 32


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as ``tf.signal`` uses it."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(num_mels: int = NMELS, num_bins: int = NBINS, sample_rate: int = SAMPLE_RATE,
               fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """``tf.signal.linear_to_mel_weight_matrix`` in float64: shape ``(num_bins, num_mels)``."""
    lin = np.linspace(0.0, sample_rate / 2.0, num_bins)[1:]  # DC bin is zeroed below
    mel_bins = hz_to_mel(lin)[:, None]
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slopes = (mel_bins - lower) / (center - lower)
    upper_slopes = (upper - mel_bins) / (upper - center)
    w = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.pad(w, [[1, 0], [0, 0]])


def periodic_hann(n: int = WINDOW) -> np.ndarray:
    """``tf.signal.hann_window(n, periodic=True)`` in float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


# ---------------------------------------------------------------------------------------------
# plain NumPy reference (the oracle)


def reference_log_mel(waveform: np.ndarray) -> np.ndarray:
    """Log-mel frames ``(n_frames, 64)`` float64 of a 16 kHz mono waveform, no centring."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if len(x) < WINDOW:
        return np.zeros((0, NMELS))
    n = 1 + (len(x) - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * periodic_hann()[None, :]
    mag = np.abs(np.fft.rfft(frames, NFFT, axis=1))
    return np.log(mag @ mel_matrix() + LOG_OFFSET)


def padded_length(n_samples: int, patch_hop: int = 48) -> int:
    """Length YAMNet's ``pad_waveform`` pads ``n_samples`` to (hop given in frames)."""
    hop_s = patch_hop * HOP
    n = max(n_samples, PATCH_SAMPLES)
    after = n - PATCH_SAMPLES
    return PATCH_SAMPLES + -(-after // hop_s) * hop_s


def reference_patches(waveform: np.ndarray, patch_hop: int = 48) -> np.ndarray:
    """YAMNet's offline patches ``(n_patches, 96, 64)`` float64, with its end-of-clip padding."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    x = np.pad(x, (0, padded_length(len(x), patch_hop) - len(x)))
    mel = reference_log_mel(x)
    n = 1 + (len(mel) - PATCH_FRAMES) // patch_hop
    return np.stack([mel[p * patch_hop: p * patch_hop + PATCH_FRAMES] for p in range(n)])


# ---------------------------------------------------------------------------------------------
# streaming kernel


def _fft_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bits = int(np.log2(n))
    rev = np.zeros(n, np.int64)
    for i in range(n):
        rev[i] = int(format(i, f"0{bits}b")[::-1], 2)
    k = np.arange(n // 2)
    return rev, np.cos(2 * np.pi * k / n), np.sin(2 * np.pi * k / n)


def _mel_bands(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last non-zero bin of each mel band."""
    lo = np.zeros(w.shape[1], np.int64)
    hi = np.zeros(w.shape[1], np.int64)
    for m in range(w.shape[1]):
        nz = np.nonzero(w[:, m])[0]
        if len(nz):
            lo[m], hi[m] = nz[0], nz[-1] + 1
    return lo, hi


@njit(cache=True, nogil=True)
def _log_mel_frames(x, sbuf, state, window, rev, cos_t, sin_t, melw, mlo, mhi, frames, re, im,
                    mag):  # pragma: no cover - compiled
    """Consume ``x``; for every complete 400-sample frame write one log-mel row into the ring
    ``frames`` at row ``total % len(frames)``. ``state = [samples in sbuf, total frames]``."""
    n_fft = re.shape[0]
    win = sbuf.shape[0]
    hop = win - state[2]  # state[2] = overlap kept after each frame (240)
    fcap = frames.shape[0]
    fill = state[0]
    total = state[1]
    for i in range(x.shape[0]):
        sbuf[fill] = x[i]
        fill += 1
        if fill < win:
            continue
        # windowed frame, zero-padded to n_fft, in bit-reversed order
        for k in range(n_fft):
            j = rev[k]
            re[k] = sbuf[j] * window[j] if j < win else 0.0
            im[k] = 0.0
        size = 2
        while size <= n_fft:
            half = size // 2
            step = n_fft // size
            for start in range(0, n_fft, size):
                for j in range(half):
                    wr = cos_t[j * step]
                    wi = -sin_t[j * step]
                    a = start + j
                    b = a + half
                    tr = re[b] * wr - im[b] * wi
                    ti = re[b] * wi + im[b] * wr
                    re[b] = re[a] - tr
                    im[b] = im[a] - ti
                    re[a] += tr
                    im[a] += ti
            size *= 2
        for k in range(mag.shape[0]):
            mag[k] = np.sqrt(re[k] * re[k] + im[k] * im[k])
        row = total % fcap
        for m in range(frames.shape[1]):
            acc = 0.0
            for k in range(mlo[m], mhi[m]):
                acc += mag[k] * melw[k, m]
            frames[row, m] = np.log(acc + 0.001)
        total += 1
        # keep the overlap for the next frame
        for k in range(win - hop):
            sbuf[k] = sbuf[k + hop]
        fill = win - hop
    state[0] = fill
    state[1] = total


class YamnetFeatures:
    """Streaming YAMNet log-mel patches from 16 kHz mono audio of any block size.

    ``for index, patch in feats.push(x): ...`` yields every patch completed by ``x``: ``index`` is
    the patch number (patch ``p`` starts at sample ``p * patch_hop * 160``) and ``patch`` a
    ``(96, 64)`` float32 view of an internal buffer, valid until the next iteration. Iterate the
    generator to the end on every call. ``finish()`` pads the end of the stream with zeros as
    YAMNet's ``pad_waveform`` does and yields the last patch(es).

    Real-time: no allocation per block beyond the generator; the kernel is ``nogil``.
    """

    def __init__(self, patch_hop: int = 48):
        if patch_hop < 1:
            raise ValueError("patch_hop must be >= 1 frame (10 ms)")
        self.patch_hop = int(patch_hop)
        self.hop_samples = self.patch_hop * HOP
        self._window = periodic_hann(WINDOW)
        self._rev, self._cos, self._sin = _fft_tables(NFFT)
        self._melw = mel_matrix()
        self._mlo, self._mhi = _mel_bands(self._melw)
        self._sbuf = np.zeros(WINDOW, np.float64)
        self._frames = np.zeros((PATCH_FRAMES + _CHUNK_FRAMES + 8, NMELS), np.float32)
        self._patch = np.zeros((PATCH_FRAMES, NMELS), np.float32)
        self._re = np.zeros(NFFT, np.float64)
        self._im = np.zeros(NFFT, np.float64)
        self._mag = np.zeros(NBINS, np.float64)
        self._zeros = np.zeros(_CHUNK_FRAMES * HOP, np.float32)
        self._state = np.zeros(3, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next sample is sample 0 of a new stream."""
        self._sbuf[:] = 0.0
        self._state[:] = (0, 0, WINDOW - HOP)
        self.samples = 0  # samples pushed (zero padding from finish() excluded)
        self._padded = 0
        self.next_patch = 0  # index of the next patch to be yielded

    def warmup(self) -> None:
        """Compile (or load from the Numba cache) the kernel for contiguous and strided float32
        blocks, so the first real block does not compile; state is reset afterwards."""
        z = np.zeros(2 * WINDOW, np.float32)
        for x in (z[:WINDOW], z[::2]):
            for _ in self.push(x):
                pass
        self.reset()

    def push(self, x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        if x.ndim == 2:
            x = x[:, 0]
        self.samples += len(x)
        return self._run(x)

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """End of stream: zero-pad as YAMNet's ``pad_waveform`` and yield the remaining patches.

        An empty stream yields nothing (YAMNet would classify one patch of silence)."""
        total = self.samples + self._padded
        need = 0 if self.samples == 0 else padded_length(total, self.patch_hop) - total
        return self._pad(need)

    def _pad(self, need: int) -> Iterator[tuple[int, np.ndarray]]:
        while need > 0:
            n = min(need, len(self._zeros))
            self._padded += n
            need -= n
            yield from self._run(self._zeros[:n])

    def _run(self, x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        step = _CHUNK_FRAMES * HOP
        frames = self._frames
        fcap = len(frames)
        for pos in range(0, len(x), step):
            _log_mel_frames(x[pos:pos + step], self._sbuf, self._state, self._window, self._rev,
                            self._cos, self._sin, self._melw, self._mlo, self._mhi, frames,
                            self._re, self._im, self._mag)
            total = int(self._state[1])
            while self.next_patch * self.patch_hop + PATCH_FRAMES <= total:
                first = self.next_patch * self.patch_hop
                r0 = first % fcap
                n1 = min(PATCH_FRAMES, fcap - r0)
                self._patch[:n1] = frames[r0:r0 + n1]
                if n1 < PATCH_FRAMES:
                    self._patch[n1:] = frames[: PATCH_FRAMES - n1]
                idx = self.next_patch
                self.next_patch += 1
                yield idx, self._patch
