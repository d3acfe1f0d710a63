"""HRTF sets: SOFA loading, preparation for a sample rate, caching and direction lookup.

Everything here runs *off* the audio thread (at ``prepare`` time); the result, an
:class:`HrtfSet`, holds only flat arrays that the Numba renderer in
:mod:`engine.dsp.spatial_kernels` reads without allocating.

Pipeline (:func:`prepare_hrtf`):

1. :func:`load_sofa` reads a SOFA file of the ``SimpleFreeFieldHRIR`` convention with h5py and
   refuses anything else with an :class:`HrtfError` that says what is wrong.
2. :func:`resample_ir` resamples every response to the engine rate (band-limited, exact DFT
   evaluation; no scipy at run time).
3. Each response is split into a minimum-phase FIR of ``taps`` samples (power spectrum smoothed
   over 1/12 octave but at least 150 Hz, then cepstral minimum phase, half-Hann fade-out) and one
   fractional onset delay per ear. The delays are set so that the interaural cross-correlation lag
   in 100-1500 Hz (4th-order Butterworth band) of the rendered pair equals that of the measured
   pair, whether the dataset bakes the ITD into its IRs or stores it in ``Data.Delay`` (which is
   added). The common (mean-ear) delay carries no cue; its per-direction estimate jitters (by
   65 us between two horizontal MIT directions 10 degrees apart), which frequency-modulates a
   moving source, so it is replaced by a smooth spherical-harmonic fit (order 4,
   :func:`smooth_on_sphere`); the ITD is kept as measured.
4. Caps with no measured direction within 20 degrees of a pole (the bottom of the MIT KEMAR set)
   get a synthetic pole: RMS-average magnitude of the nearest ring, mean delays.
5. The directions are triangulated by a convex hull of unit vectors (own incremental algorithm,
   numpy only) and a 1-degree azimuth/elevation grid stores, for each node, the hull triangle
   containing it. At run time a direction costs one grid read, usually zero or one walking step
   and a 3x3 product: weights are exact barycentric weights, so a measured direction reproduces
   its measured filter exactly.

Prepared sets are cached as ``.npz`` under ``$AUDIO_ENGINE_CACHE`` (default
``~/.cache/audio-engine``)/``hrtf``, keyed by the SOFA file's sha256, the rate, the length and the
format version; loading a cached set takes milliseconds.

Conventions: SOFA azimuth is counter-clockwise (positive to the *left*); the engine's azimuth is
positive to the *right*. :meth:`HrtfSet.lookup` and :meth:`HrtfSet.response` take engine angles.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError
from . import spatial_kernels as sk

FORMAT_VERSION = 3
SPEED_OF_SOUND = 343.0
#: band (Hz) over which ``normalize`` gives the set unit mean power per ear, whatever the rate
NORM_BAND_HZ = (200.0, 7000.0)
DEFAULT_SOFA = Path(__file__).resolve().parents[1] / "data" / "hrtf" / "MIT_KEMAR_normal_pinna.sofa"
#: cross-correlation band that defines the ITD (Hz) and the Butterworth order of its filter
ITD_BAND = (100.0, 1500.0)
ITD_ORDER = 4
#: a pole with no measured direction closer than this (degrees) gets a synthetic direction
POLE_GAP_DEG = 20.0


class HrtfError(EngineError):
    """An HRTF (SOFA) file cannot be used: names the file, what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# SOFA reading


@dataclass(frozen=True)
class SofaData:
    """Raw content of a SimpleFreeFieldHRIR file (angles in the SOFA convention: + = left)."""

    path: str
    sample_rate: float
    ir: np.ndarray  # (M, 2, N) float64
    delay: np.ndarray  # (M, 2) samples at ``sample_rate``
    azimuth: np.ndarray  # (M,) degrees, counter-clockwise
    elevation: np.ndarray  # (M,) degrees
    distance: np.ndarray  # (M,) metres
    attrs: dict[str, str] = field(default_factory=dict)


def _attr(obj, name: str) -> str:
    v = obj.attrs.get(name)
    if v is None or type(v).__name__ == "Empty":
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.dtype.kind == "S":
        return b"".join(v.ravel().tolist()).decode("utf-8", "replace")
    try:
        return str(v.decode("utf-8", "replace")) if hasattr(v, "decode") else str(v)
    except Exception:  # noqa: BLE001 - h5py "Empty" attributes
        return ""


def load_sofa(path: str | os.PathLike) -> SofaData:
    """Read and validate a SOFA ``SimpleFreeFieldHRIR`` file. Raises :class:`HrtfError`."""
    path = Path(path)
    fix = "point the node's hrtf parameter at a SimpleFreeFieldHRIR .sofa file, or use 'default'"
    if not path.is_file():
        raise HrtfError(f"HRTF file {path} not found: {fix}")
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is in the hrtf extra
        raise HrtfError("reading SOFA files needs h5py: pip install 'audio-engine[hrtf]'") from None
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise HrtfError(
            f"{path} cannot be read as a SOFA (HDF5/netCDF-4) file ({e}); it is truncated, "
            f"corrupt or not a SOFA file: download it again or {fix}") from None
    try:
        with f:
            return _read_sofa(f, path, fix)
    except HrtfError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise HrtfError(f"{path} is damaged: reading it failed ({e}): download it again or "
                        f"{fix}") from None


def _read_sofa(f, path: Path, fix: str) -> SofaData:
    conv = _attr(f, "Conventions")
    if conv != "SOFA":
        raise HrtfError(f"{path} is an HDF5 file but not SOFA (Conventions = {conv!r}): {fix}")
    sc = _attr(f, "SOFAConventions")
    if sc != "SimpleFreeFieldHRIR":
        raise HrtfError(
            f"{path} uses the SOFA convention {sc!r}; the spatializer reads only "
            f"'SimpleFreeFieldHRIR' (head-related impulse responses in free field): convert it "
            f"(e.g. with the SOFA toolbox) or {fix}")
    dtype = _attr(f, "DataType")
    if dtype and dtype != "FIR":
        raise HrtfError(f"{path} has DataType {dtype!r}, expected 'FIR': {fix}")
    for name in ("Data.IR", "Data.SamplingRate", "SourcePosition"):
        if name not in f:
            raise HrtfError(f"{path} lacks the variable {name} required by SimpleFreeFieldHRIR: "
                            f"{fix}")
    ir = np.asarray(f["Data.IR"][()], dtype=np.float64)
    if ir.ndim != 3 or ir.shape[1] != 2 or ir.shape[0] < 4 or ir.shape[2] < 8:
        raise HrtfError(f"{path}: Data.IR has shape {ir.shape}, expected (measurements, 2 ears, "
                        f"samples) with at least 4 measurements: {fix}")
    m, _, n = ir.shape
    if not np.all(np.isfinite(ir)):
        raise HrtfError(f"{path}: Data.IR contains NaN or infinite values: {fix}")
    fs = np.asarray(f["Data.SamplingRate"][()], dtype=np.float64).ravel()
    if fs.size < 1 or not np.all(fs == fs[0]) or not (1000.0 <= fs[0] <= 768000.0):
        raise HrtfError(f"{path}: Data.SamplingRate {fs.tolist()} is not one rate in "
                        f"1-768 kHz: {fix}")
    units = _attr(f["Data.SamplingRate"], "Units").lower()
    if units and units not in ("hertz", "hz"):
        raise HrtfError(f"{path}: Data.SamplingRate is in {units!r}, expected hertz: {fix}")
    sp_ds = f["SourcePosition"]
    sp = np.asarray(sp_ds[()], dtype=np.float64)
    if sp.ndim == 3 and sp.shape[2] == 1:
        sp = sp[:, :, 0]
    if sp.ndim != 2 or sp.shape[1] != 3 or sp.shape[0] not in (m,):
        raise HrtfError(f"{path}: SourcePosition has shape {sp.shape}, expected ({m}, 3): {fix}")
    if not np.all(np.isfinite(sp)):
        raise HrtfError(f"{path}: SourcePosition contains NaN or infinite values: {fix}")
    kind = _attr(sp_ds, "Type").lower() or "spherical"
    if kind == "cartesian":
        r = np.linalg.norm(sp, axis=1)
        if np.any(r <= 0):
            raise HrtfError(f"{path}: a cartesian SourcePosition is at the listener: {fix}")
        az = np.degrees(np.arctan2(sp[:, 1], sp[:, 0]))
        el = np.degrees(np.arcsin(np.clip(sp[:, 2] / r, -1, 1)))
    elif kind == "spherical":
        sp_units = _attr(sp_ds, "Units").lower()
        if "rad" in sp_units:
            raise HrtfError(f"{path}: SourcePosition units {sp_units!r} are not supported "
                            f"(SOFA requires degrees): {fix}")
        az, el, r = sp[:, 0], sp[:, 1], sp[:, 2]
        if np.any(np.abs(el) > 90.0 + 1e-6):
            raise HrtfError(f"{path}: SourcePosition has elevations outside -90..90 degrees: {fix}")
    else:
        raise HrtfError(f"{path}: SourcePosition Type {kind!r} is neither spherical nor "
                        f"cartesian: {fix}")
    delay = np.zeros((m, 2))
    if "Data.Delay" in f:
        d = np.asarray(f["Data.Delay"][()], dtype=np.float64)
        if d.ndim == 3 and d.shape[2] == 1:
            d = d[:, :, 0]
        if d.ndim != 2 or d.shape[1] != 2 or d.shape[0] not in (1, m):
            raise HrtfError(f"{path}: Data.Delay has shape {d.shape}, expected (1, 2) or "
                            f"({m}, 2): {fix}")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise HrtfError(f"{path}: Data.Delay has negative or non-finite values: {fix}")
        delay = np.broadcast_to(d, (m, 2)).astype(np.float64)
    attrs = {k: _attr(f, k) for k in ("Title", "DatabaseName", "ListenerShortName", "License",
                                       "Organization", "AuthorContact", "References")}
    return SofaData(str(path), float(fs[0]), ir, delay, np.asarray(az, np.float64),
                    np.asarray(el, np.float64), np.asarray(r, np.float64), attrs)


# ---------------------------------------------------------------------------------------------
# signal preparation


def resample_ir(ir: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Band-limited resampling of impulse responses along the last axis.

    The zero-padded DFT of each response is evaluated at the output instants (exact band-limited
    interpolation, no phase distortion); content above 95 % of the lower Nyquist frequency is
    faded out with a raised cosine. Amplitudes are scaled by ``fs_in / fs_out`` so that the
    frequency response (not the sample values) is preserved.
    """
    ir = np.asarray(ir, dtype=np.float64)
    if fs_in == fs_out:
        return ir.copy()
    n = ir.shape[-1]
    nfft = int(2 ** np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(ir, nfft)
    k = np.arange(spec.shape[-1])
    f = k * fs_in / nfft
    ny = min(fs_in, fs_out) / 2
    taper = np.clip((ny - f) / (0.05 * ny), 0.0, 1.0)
    spec = spec * (0.5 - 0.5 * np.cos(np.pi * taper))
    n_out = int(np.ceil(n * fs_out / fs_in)) + 16
    t = np.arange(n_out) * (fs_in / fs_out)
    wk = np.full(len(k), 2.0)
    wk[0] = 1.0
    wk[-1] = 1.0
    basis = np.exp(2j * np.pi * np.outer(k, t) / nfft) * wk[:, None]
    flat = spec.reshape(-1, spec.shape[-1])
    y = (flat @ basis).real / nfft * (fs_in / fs_out)
    return y.reshape(ir.shape[:-1] + (n_out,))


def _smooth_power(p: np.ndarray, f: np.ndarray, frac: float, min_hz: float) -> np.ndarray:
    """Moving average of a power spectrum over max(``frac`` octave, ``min_hz``) around each bin."""
    cs = np.concatenate([np.zeros(p.shape[:-1] + (1,)), np.cumsum(p, axis=-1)], axis=-1)
    df = f[1] - f[0]
    bw = np.maximum(f * (2 ** (frac / 2) - 2 ** (-frac / 2)), min_hz)
    lo = np.clip(np.round((f - bw / 2) / df).astype(int), 0, len(f) - 1)
    hi = np.clip(np.round((f + bw / 2) / df).astype(int) + 1, 1, len(f))
    return (cs[..., hi] - cs[..., lo]) / (hi - lo)


def _nfft_for(n: int) -> int:
    return int(max(4096, 2 ** np.ceil(np.log2(4 * n))))


def min_phase_from_power(power: np.ndarray, fs: float, taps: int, nfft: int,
                         f_valid: float) -> np.ndarray:
    """Minimum-phase FIRs (..., taps) whose power response approximates ``power`` (..., nfft/2+1).

    The power is smoothed (1/12 octave, at least 150 Hz: the resolution a short filter can hold),
    held constant above ``f_valid`` (no brick wall to ring), floored at -100 dB, turned into a
    minimum-phase response through the real cepstrum, truncated and faded out over taps/8.
    """
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    p = _smooth_power(power, f, 1 / 12, 150.0)
    kv = int(np.searchsorted(f, f_valid))
    if kv < len(f):
        p[..., kv:] = p[..., kv - 1: kv]
    mag = np.sqrt(np.maximum(p, p.max(axis=-1, keepdims=True) * 1e-10 + 1e-30))
    cep = np.fft.irfft(np.log(mag), nfft)
    fold = np.zeros(nfft)
    fold[0] = 1.0
    fold[1: nfft // 2] = 2.0
    fold[nfft // 2] = 1.0
    h = np.fft.irfft(np.exp(np.fft.rfft(cep * fold, nfft)), nfft)[..., :taps]
    fade = max(taps // 8, 1)
    h[..., taps - fade:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(fade) + 1) / (fade + 1))
    return h


def butter_band_power(f: np.ndarray, fs: float, lo: float, hi: float, order: int) -> np.ndarray:
    """|H|^2 of the digital Butterworth band-pass ``scipy.signal.butter(order, (lo, hi), 'band')``
    (bilinear transform with pre-warping), evaluated at frequencies ``f``."""
    w = np.tan(np.pi * np.clip(f, 1e-9, fs / 2 - 1e-9) / fs)
    w1 = np.tan(np.pi * lo / fs)
    w2 = np.tan(np.pi * hi / fs)
    x = (w * w - w1 * w2) / (w * (w2 - w1))
    return 1.0 / (1.0 + x ** (2 * order))


def xcorr_lag(a: np.ndarray, b: np.ndarray, fs: float, band: tuple[float, float] = ITD_BAND,
              order: int = ITD_ORDER, nfft: int | None = None) -> np.ndarray:
    """Lag (samples, fractional) maximising the band-passed cross-correlation of ``a`` and ``b``.

    Positive when ``a`` lags ``b`` (for ``a`` = left ear, ``b`` = right ear: the source is on the
    right). Coarse peak from a 4x upsampled correlation, refined by Newton steps on the exact
    band-limited correlation function.
    """
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    if nfft is None:
        nfft = int(2 ** np.ceil(np.log2(a.shape[-1] + b.shape[-1])))
    fr = np.fft.rfftfreq(nfft, 1.0 / fs)
    c = np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)) * butter_band_power(fr, fs, *band,
                                                                                   order)
    up = 4
    cc = np.fft.irfft(c, nfft * up)
    tau = np.argmax(cc, axis=-1) / up
    tau = np.where(tau > nfft / 2, tau - nfft, tau).astype(np.float64)
    k = np.arange(c.shape[-1])
    wk = np.full(len(k), 2.0)
    wk[0] = 1.0
    wk[-1] = 1.0
    wb = butter_band_power(fr, fs, *band, order)
    use = wb > 1e-9 * wb.max()  # the band-limited correlation lives on these bins only
    k, wk, c = k[use], wk[use], c[:, use]
    om = 2 * np.pi * k / nfft
    c1 = c * wk * (1j * om)
    c2 = c * wk * (-(om ** 2))
    for _ in range(4):
        e = np.exp(1j * tau[:, None] * om[None, :])
        d1 = np.real(c1 * e).sum(-1)
        d2 = np.real(c2 * e).sum(-1)
        step = np.where(d2 < 0, -d1 / np.where(d2 == 0, -1.0, d2), 0.0)
        tau = tau + np.clip(step, -0.5, 0.5)
    return tau


# ---------------------------------------------------------------------------------------------
# geometry


def sh_basis(v: np.ndarray, order: int) -> np.ndarray:
    """Real spherical harmonics up to ``order`` at unit vectors ``v`` (n, 3): (n, (order+1)^2).

    Orthonormal over the sphere with weight 1/(4 pi) (so a uniform sampling gives B^T B ~ n I);
    column ``l*l + l + m`` is degree ``l``, order ``m`` (sine terms at negative ``m``). Fully
    normalised Legendre recursion with the ``sin(theta)^m`` factor carried by ``(x + iy)^m``, so
    there is no angle and no pole singularity.
    """
    v = np.atleast_2d(np.asarray(v, np.float64))
    z = v[:, 2]
    xy = v[:, 0] + 1j * v[:, 1]
    out = np.zeros((len(v), (order + 1) ** 2))
    pmm = np.ones(len(v))
    cm = np.ones(len(v), complex)
    for m in range(order + 1):
        if m > 0:
            pmm = pmm * np.sqrt((2 * m + 1) / (2 * m))
            cm = cm * xy
        p2 = np.zeros(len(v))
        p1 = pmm
        for deg in range(m, order + 1):
            if deg == m:
                p = pmm
            else:
                a = np.sqrt((2 * deg - 1) * (2 * deg + 1) / ((deg - m) * (deg + m)))
                b = np.sqrt((2 * deg + 1) * (deg + m - 1) * (deg - m - 1)
                            / ((deg - m) * (deg + m) * (2 * deg - 3))) if deg > m + 1 else 0.0
                p = a * z * p1 - b * p2
                p2, p1 = p1, p
            k = deg * deg + deg
            if m == 0:
                out[:, k] = p
            else:
                out[:, k + m] = np.sqrt(2) * p * cm.real
                out[:, k - m] = np.sqrt(2) * p * cm.imag
    return out


#: spherical-harmonic order of the common (mean-ear) delay (see :func:`smooth_on_sphere`)
MID_ORDER = 4


def smooth_on_sphere(v: np.ndarray, y: np.ndarray, order: int = MID_ORDER,
                     lam: float = 1e-4) -> np.ndarray:
    """Values ``y`` at unit vectors ``v`` replaced by their least-squares fit with spherical
    harmonics up to ``order`` (lowered for small sets: at least 3 directions per coefficient),
    damped by ``lam * l^2 (l+1)^2`` per degree so gaps in the sampling (the missing bottom cap
    of the MIT set) do not swing the fit."""
    order = max(0, min(order, int(np.sqrt(len(v) / 3)) - 1))
    b = sh_basis(v, order)
    deg = np.concatenate([np.full(2 * d + 1, d) for d in range(order + 1)]).astype(np.float64)
    a = b.T @ b + np.diag(lam * len(v) * (deg * (deg + 1)) ** 2)
    return b @ np.linalg.solve(a, b.T @ y)


def unit_vectors(az_sofa_deg: np.ndarray, el_deg: np.ndarray) -> np.ndarray:
    """SOFA azimuth (counter-clockwise) / elevation in degrees to unit vectors (x front, y left)."""
    az = np.radians(az_sofa_deg)
    el = np.radians(el_deg)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def engine_vectors(az_deg, el_deg) -> np.ndarray:
    """Engine azimuth (positive to the right) / elevation in degrees to SOFA-frame unit vectors."""
    return unit_vectors(-np.asarray(az_deg, np.float64), np.asarray(el_deg, np.float64))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Triangles (T, 3) of the convex hull of unit vectors, counter-clockwise seen from outside.

    Incremental algorithm (numpy only). Points are jittered by 1e-9 to break the ties of
    co-circular rings (every quad of a ring-structured set is planar); the tie is split either
    way, which is harmless for interpolation. Duplicate points are skipped.
    """
    rng = np.random.default_rng(20240613)
    p = np.asarray(points, np.float64) + rng.normal(scale=1e-9, size=points.shape)
    n = len(p)
    if n < 4:
        raise HrtfError("an HRTF set needs at least 4 distinct directions")
    i0 = 0
    i1 = int(np.argmax(np.linalg.norm(p - p[i0], axis=1)))
    u = p[i1] - p[i0]
    d_line = np.linalg.norm(np.cross(p - p[i0], u), axis=1)
    i2 = int(np.argmax(d_line))
    nrm = np.cross(p[i1] - p[i0], p[i2] - p[i0])
    d_pl = (p - p[i0]) @ nrm
    i3 = int(np.argmax(np.abs(d_pl)))
    if abs(d_pl[i3]) < 1e-9 or d_line[i2] < 1e-9:
        raise HrtfError("the HRTF directions are all in one plane; they cannot surround the "
                        "listener")
    cap = 16 * n + 16
    faces = np.zeros((cap, 3), np.int64)
    normals = np.zeros((cap, 3))
    offs = np.full(cap, np.inf)
    alive = np.zeros(cap, bool)
    edge: dict[tuple[int, int], int] = {}
    nf = 0
    centroid = p[[i0, i1, i2, i3]].mean(axis=0)

    def add(a: int, b: int, c: int) -> None:
        nonlocal nf
        nv = np.cross(p[b] - p[a], p[c] - p[a])
        nv /= np.linalg.norm(nv)
        faces[nf] = (a, b, c)
        normals[nf] = nv
        offs[nf] = nv @ p[a]
        alive[nf] = True
        edge[(a, b)] = nf
        edge[(b, c)] = nf
        edge[(c, a)] = nf
        nf += 1

    for a, b, c in ((i0, i1, i2), (i0, i3, i1), (i1, i3, i2), (i2, i3, i0)):
        nv = np.cross(p[b] - p[a], p[c] - p[a])
        if nv @ (p[a] - centroid) < 0:
            b, c = c, b
        add(a, b, c)
    rest = np.setdiff1d(np.arange(n), [i0, i1, i2, i3])
    rng.shuffle(rest)
    for q in rest:
        vis = np.flatnonzero(alive[:nf] & (normals[:nf] @ p[q] - offs[:nf] > 1e-12))
        if len(vis) == 0:
            continue
        vset = set(vis.tolist())
        horizon = []
        for fi in vis:
            a, b, c = faces[fi]
            for e0, e1 in ((a, b), (b, c), (c, a)):
                if edge.get((e1, e0)) not in vset:
                    horizon.append((int(e0), int(e1)))
        for fi in vis:
            alive[fi] = False
            a, b, c = faces[fi]
            for e0, e1 in ((a, b), (b, c), (c, a)):
                if edge.get((e0, e1)) == fi:
                    del edge[(e0, e1)]
        if nf + len(horizon) > len(faces):  # grow (rare: dead faces are never reused)
            faces = np.concatenate([faces, np.zeros_like(faces)])
            normals = np.concatenate([normals, np.zeros_like(normals)])
            offs = np.concatenate([offs, np.full(len(offs), np.inf)])
            alive = np.concatenate([alive, np.zeros(len(alive), bool)])
        for e0, e1 in horizon:
            add(e0, e1, int(q))
    return faces[:nf][alive[:nf]].astype(np.int32)


def triangle_tables(dirs: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse vertex matrices (T, 3, 3) and edge neighbours (T, 3) of a closed triangulation.

    ``nbr[t, i]`` is the triangle across the edge opposite vertex ``i``. Raises
    :class:`HrtfError` when the hull does not surround the listener.
    """
    m = np.transpose(dirs[tri], (0, 2, 1))  # columns are the vertices
    det = np.linalg.det(m)
    if np.any(det <= 1e-12):
        raise HrtfError("the HRTF directions do not surround the listener (a hull face passes "
                        "through the centre); the set needs directions on all sides")
    inv = np.linalg.inv(m)
    owner: dict[tuple[int, int], int] = {}
    for t, (a, b, c) in enumerate(tri.tolist()):
        owner[(a, b)] = t
        owner[(b, c)] = t
        owner[(c, a)] = t
    nbr = np.empty_like(tri)
    for t, (a, b, c) in enumerate(tri.tolist()):
        nbr[t, 0] = owner[(c, b)]
        nbr[t, 1] = owner[(a, c)]
        nbr[t, 2] = owner[(b, a)]
    return inv, nbr.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# the prepared set


@dataclass
class HrtfSet:
    """An HRTF set prepared for one sample rate: arrays read by the renderer, plus lookup helpers.

    ``filters`` are stored in time order (``filters_rev`` is the renderer's reversed copy);
    ``delays`` are per-ear onsets in samples, the smallest being ``spatial_kernels.INTERP_HALF``
    (the earliest the fractional delay line can play); ``onset_removed`` is how many samples of
    the dataset's common onset were removed to get there.
    """

    sample_rate: int
    taps: int
    dirs: np.ndarray  # (K, 3) unit vectors, SOFA frame
    measured: np.ndarray  # (K,) bool: False for synthetic (pole) directions
    filters: np.ndarray  # (K, 2, taps) float32
    delays: np.ndarray  # (K, 2) float64 samples
    tri: np.ndarray  # (T, 3) int32
    tri_inv: np.ndarray  # (T, 3, 3) float64
    nbr: np.ndarray  # (T, 3) int32
    grid: np.ndarray  # (181, 360) int32
    onset_removed: float
    norm_gain: float
    name: str = ""
    source_sha256: str = ""
    filters_rev: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.filters_rev = np.ascontiguousarray(self.filters[:, :, ::-1])

    def lookup(self, az_deg, el_deg) -> tuple[np.ndarray, np.ndarray]:
        """Vertex indices and barycentric weights, each (n, 3), for engine angles (+az = right)."""
        v = np.atleast_2d(engine_vectors(az_deg, el_deg)).reshape(-1, 3)
        return self.lookup_vectors(v)

    def lookup_vectors(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.ascontiguousarray(np.atleast_2d(v), dtype=np.float64)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        idx = np.zeros((len(v), 3), np.int64)
        w = np.zeros((len(v), 3))
        sk.locate_many(v, self.tri, self.tri_inv, self.nbr, self.grid, idx, w)
        return idx, w

    def response(self, az_deg, el_deg) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated filters (n, 2, taps) and delays (n, 2) for engine angles, as rendered
        for a still source at the reference distance (before ``norm_gain``)."""
        idx, w = self.lookup(az_deg, el_deg)
        h = np.einsum("nk,nkef->nef", w, self.filters[idx].astype(np.float64))
        d = np.einsum("nk,nke->ne", w, self.delays[idx])
        return h, d

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, version=FORMAT_VERSION, sample_rate=self.sample_rate, taps=self.taps,
                 dirs=self.dirs, measured=self.measured, filters=self.filters,
                 delays=self.delays, tri=self.tri, tri_inv=self.tri_inv, nbr=self.nbr,
                 grid=self.grid, onset_removed=self.onset_removed, norm_gain=self.norm_gain,
                 name=self.name, source_sha256=self.source_sha256)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> HrtfSet:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != FORMAT_VERSION:
                raise ValueError("stale cache format")
            return cls(int(z["sample_rate"]), int(z["taps"]), z["dirs"], z["measured"],
                       z["filters"], z["delays"], z["tri"], z["tri_inv"], z["nbr"], z["grid"],
                       float(z["onset_removed"]), float(z["norm_gain"]), str(z["name"]),
                       str(z["source_sha256"]))


def cache_dir() -> Path:
    """``$AUDIO_ENGINE_CACHE`` or ``~/.cache/audio-engine``."""
    env = os.environ.get("AUDIO_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audio-engine"


def resolve_sofa(name: str | os.PathLike | None) -> Path:
    """``None``/``"default"`` -> the bundled MIT KEMAR set; anything else is a path."""
    if name is None or str(name) in ("", "default"):
        return DEFAULT_SOFA
    return Path(os.path.expanduser(str(name)))


_MEMO: dict[tuple[str, int, int], HrtfSet] = {}
_MEMO_LOCK = threading.Lock()


def prepare_hrtf(sofa: str | os.PathLike | None = None, sample_rate: int = 48000,
                 taps: int = 128, use_cache: bool = True) -> HrtfSet:
    """Load ``sofa`` prepared for ``sample_rate`` and ``taps`` (memoised, disk-cached).

    Off the audio thread only: a cold preparation takes about a second, a cached one
    milliseconds. Raises :class:`HrtfError` for unusable files.
    """
    path = resolve_sofa(sofa)
    if not path.is_file():
        raise HrtfError(f"HRTF file {path} not found: point the node's hrtf parameter at a "
                        f"SimpleFreeFieldHRIR .sofa file, or use 'default'")
    if not (16 <= taps <= 4096):
        raise HrtfError(f"taps = {taps}: use 16..4096 (128 is the default)")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    key = (sha, int(sample_rate), int(taps))
    with _MEMO_LOCK:
        if use_cache and key in _MEMO:
            return _MEMO[key]
    stem = f"{path.stem}-{sha[:16]}-{sample_rate}-{taps}-v{FORMAT_VERSION}"
    cfile = cache_dir() / "hrtf" / f"{stem}.npz"
    hs = None
    if use_cache and cfile.is_file():
        try:
            hs = HrtfSet.load(cfile)
        except Exception:  # noqa: BLE001 - a bad cache entry is rebuilt
            hs = None
    if hs is None:
        hs = build_hrtf(load_sofa(path), sample_rate, taps, sha)
        if use_cache:
            try:
                cfile.parent.mkdir(parents=True, exist_ok=True)
                hs.save(cfile)
            except OSError:
                pass  # read-only cache: keep working from memory
    if use_cache:
        with _MEMO_LOCK:
            _MEMO[key] = hs
    return hs


def build_hrtf(sofa: SofaData, sample_rate: int, taps: int = 128, sha: str = "") -> HrtfSet:
    """Prepare a loaded SOFA set for ``sample_rate`` (see the module docstring for the steps)."""
    fs = float(sample_rate)
    ratio = fs / sofa.sample_rate
    # merge duplicate directions (keep the first)
    v = unit_vectors(sofa.azimuth, sofa.elevation)
    keep = []
    for i in range(len(v)):
        if not keep or np.max(v[keep] @ v[i]) < np.cos(np.radians(0.01)):
            keep.append(i)
    keep_a = np.asarray(keep)
    v = v[keep_a]
    ir = resample_ir(sofa.ir[keep_a], sofa.sample_rate, fs)  # (M, 2, N')
    extra = sofa.delay[keep_a] * ratio
    m, _, n = ir.shape
    nfft = _nfft_for(n)
    f_valid = 0.95 * min(fs, sofa.sample_rate) / 2
    power = np.abs(np.fft.rfft(ir, nfft)) ** 2
    h = min_phase_from_power(power, fs, taps, nfft, f_valid)  # (M, 2, taps)
    # onset per ear (broadband), then the interaural part fixed on the ITD band
    onset = xcorr_lag(ir.reshape(-1, n), h.reshape(-1, taps), fs, (100.0, 8000.0),
                      4).reshape(m, 2)
    itd_ds = xcorr_lag(ir[:, 0], ir[:, 1], fs)
    itd_mp = xcorr_lag(h[:, 0], h[:, 1], fs)
    mid = onset.mean(axis=1)
    corr = itd_ds - itd_mp
    # the common (mean-ear) delay carries no cue but, when it jitters from direction to
    # direction, a moving source is frequency-modulated by it: keep only its smooth trend
    mid = smooth_on_sphere(v, mid + extra.mean(axis=1))
    extra = extra - extra.mean(axis=1, keepdims=True)
    delays = np.stack([mid + corr / 2, mid - corr / 2], axis=1) + extra
    measured = np.ones(m, bool)
    # fill uncovered poles
    for sign in (-1.0, 1.0):
        pole = np.array([0.0, 0.0, sign])
        ang = np.degrees(np.arccos(np.clip(v @ pole, -1, 1)))
        if ang.min() > POLE_GAP_DEG:
            ring = ang <= ang.min() + 5.0
            pw = np.abs(np.fft.rfft(h[ring], nfft)) ** 2
            hp = min_phase_from_power(pw.mean(axis=0), fs, taps, nfft, f_valid)
            v = np.vstack([v, pole])
            h = np.concatenate([h, hp[None]], axis=0)
            delays = np.vstack([delays, delays[ring].mean(axis=0)])
            measured = np.append(measured, False)
    shift = delays.min() - sk.INTERP_HALF
    delays = delays - shift
    tri = convex_hull(v)
    tri_inv, nbr = triangle_tables(v, tri)
    grid = np.zeros((181, 360), np.int32)
    sk.build_grid(tri_inv, nbr, grid)
    # normalisation on a fixed band, so the level does not depend on the sample rate (the
    # time-domain energy counted the band above the data at high rates, none of it at low)
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    band = (freqs >= NORM_BAND_HZ[0]) & (freqs <= min(NORM_BAND_HZ[1], f_valid))
    energy = float(np.mean(np.abs(np.fft.rfft(h[measured], nfft)[..., band]) ** 2))
    name = sofa.attrs.get("DatabaseName") or Path(sofa.path).stem
    return HrtfSet(int(sample_rate), int(taps), v, measured, h.astype(np.float32), delays, tri,
                   tri_inv, nbr, grid, float(shift), float(1.0 / np.sqrt(energy)), name, sha)
