"""Numba kernels of the HRTF spatializer (``spatial.hrtf``): direction lookup and block rendering.

Real-time rules: every function here is ``nogil`` and allocation-free; the renderer writes only into
arrays preallocated by :class:`engine.nodes.spatializer.HrtfSpatializer` at ``prepare`` time.

Signal model, per source and ear ``e``::

    d_e[n] = x(n - D_e(n))                    fractional delay line (ITD + propagation), read with a
                                              16-tap Kaiser-windowed sinc (phase table, lerped)
    y_e[n] = sum_k h_e(n)[k] * d_e[n - k]     minimum-phase FIR (``taps`` long), direct form

Positions are resolved every ``P`` samples (the *update period*), on boundaries aligned to the
absolute sample clock, so output never depends on the host block size. Over the period that
follows a boundary, ``D_e`` moves linearly from its old to its new value (per sample) and the
output crossfades linearly from the old filter to the new one (``y = ya + g (yb - ya)``, ``g``
reaching 1 on the period's last sample). A *jump* (explicit, or a delay change larger than
``jump_threshold`` samples in one period) crossfades two complete renderings instead: the old
delay and filter fading out, the new delay and filter fading in, so nothing sweeps.

Coordinates are the SOFA frame: x to the front, y to the *left*, z up. The engine's public
azimuth is positive to the *right* (clockwise seen from above); the conversion is made once here,
in :func:`_source_vector`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: half-width of the windowed-sinc fractional delay (samples): the smallest delay the line can
#: produce, and the length of its kernel is ``2 * INTERP_HALF``
INTERP_HALF = 8
INTERP_TAPS = 2 * INTERP_HALF
#: phases of the interpolation table (linearly interpolated between rows)
INTERP_PHASES = 512

# columns of the per-source target array
T_AZ, T_EL, T_DIST, T_ORBIT, T_ANCHOR, T_JUMP, T_GAIN = 0, 1, 2, 3, 4, 5, 6
TARGET_COLS = 8
# entries of the configuration vector
C_FS, C_PERIOD, C_MIN_DIST, C_REF_DIST, C_PROP, C_JUMP, C_NORM, C_MAX_DIST = range(8)
CFG_LEN = 8

MODE_INIT, MODE_STATIC, MODE_MOVING, MODE_JUMP = -1, 0, 1, 2


def interp_table(half: int = INTERP_HALF, phases: int = INTERP_PHASES,
                 beta: float = 9.0) -> np.ndarray:
    """Kaiser-windowed sinc table, shape ``(phases + 1, 2 * half)``, rows of unit DC gain.

    Row ``r`` holds the coefficients for fraction ``f = r / phases``; coefficient ``q`` multiplies
    ``x[floor(p) - (half - 1) + q]``.
    """
    f = np.arange(phases + 1)[:, None] / phases
    q = np.arange(2 * half)[None, :] - (half - 1)
    t = f - q
    win = np.i0(beta * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, None))) / np.i0(beta)
    h = np.sinc(t) * win
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# direction lookup


@njit(cache=True, nogil=True)
def locate(vx: float, vy: float, vz: float, tri_inv: np.ndarray, nbr: np.ndarray,
           start: int) -> tuple[int, float, float, float]:
    """Triangle of the hull hit by direction ``v`` and its barycentric weights (sum 1, >= 0).

    Walks from triangle ``start`` across the edge of the most negative weight (a few steps from a
    grid hint); falls back to a scan of every triangle if the walk does not settle.
    """
    t = start
    for _ in range(64):
        m = tri_inv[t]
        w0 = m[0, 0] * vx + m[0, 1] * vy + m[0, 2] * vz
        w1 = m[1, 0] * vx + m[1, 1] * vy + m[1, 2] * vz
        w2 = m[2, 0] * vx + m[2, 1] * vy + m[2, 2] * vz
        lo = min(w0, w1, w2)
        if lo >= -1e-12:
            return _finish(t, w0, w1, w2)
        if w0 == lo:
            t = nbr[t, 0]
        elif w1 == lo:
            t = nbr[t, 1]
        else:
            t = nbr[t, 2]
    for t in range(tri_inv.shape[0]):
        m = tri_inv[t]
        w0 = m[0, 0] * vx + m[0, 1] * vy + m[0, 2] * vz
        w1 = m[1, 0] * vx + m[1, 1] * vy + m[1, 2] * vz
        w2 = m[2, 0] * vx + m[2, 1] * vy + m[2, 2] * vz
        if min(w0, w1, w2) >= -1e-9 and w0 + w1 + w2 > 0.0:
            return _finish(t, w0, w1, w2)
    return start, 1.0, 0.0, 0.0  # unreachable for a closed hull around the origin


@njit(cache=True, nogil=True, inline="always")
def _finish(t: int, w0: float, w1: float, w2: float) -> tuple[int, float, float, float]:
    w0 = max(w0, 0.0)
    w1 = max(w1, 0.0)
    w2 = max(w2, 0.0)
    s = w0 + w1 + w2
    return t, w0 / s, w1 / s, w2 / s


@njit(cache=True, nogil=True, inline="always")
def grid_hint(grid: np.ndarray, vx: float, vy: float, vz: float) -> int:
    """Triangle stored for the 1-degree grid node nearest to ``v`` (SOFA azimuth/elevation)."""
    az = math.degrees(math.atan2(vy, vx))
    el = math.degrees(math.asin(max(-1.0, min(1.0, vz))))
    ia = int(math.floor(az + 0.5)) % 360
    ie = int(math.floor(el + 0.5)) + 90
    return grid[ie, ia]


@njit(cache=True, nogil=True)
def build_grid(tri_inv: np.ndarray, nbr: np.ndarray, grid: np.ndarray) -> None:
    """Fill ``grid[el + 90, az]`` (SOFA degrees) with the triangle containing each grid node."""
    t = 0
    for ie in range(181):
        el = math.radians(ie - 90)
        for ia in range(360):
            az = math.radians(ia)
            vx = math.cos(el) * math.cos(az)
            vy = math.cos(el) * math.sin(az)
            vz = math.sin(el)
            t, _, _, _ = locate(vx, vy, vz, tri_inv, nbr, t)
            grid[ie, ia] = t


@njit(cache=True, nogil=True)
def locate_many(v: np.ndarray, tri: np.ndarray, tri_inv: np.ndarray, nbr: np.ndarray,
                grid: np.ndarray, idx: np.ndarray, w: np.ndarray) -> None:
    """Vectorised :func:`locate` for unit vectors ``v`` (n, 3): vertex ids and weights (n, 3)."""
    for i in range(v.shape[0]):
        h = grid_hint(grid, v[i, 0], v[i, 1], v[i, 2])
        t, w0, w1, w2 = locate(v[i, 0], v[i, 1], v[i, 2], tri_inv, nbr, h)
        idx[i, 0] = tri[t, 0]
        idx[i, 1] = tri[t, 1]
        idx[i, 2] = tri[t, 2]
        w[i, 0] = w0
        w[i, 1] = w1
        w[i, 2] = w2


# ---------------------------------------------------------------------------------------------
# rendering


@njit(cache=True, nogil=True, inline="always")
def _source_vector(az_deg: float, el_deg: float) -> tuple[float, float, float]:
    """Engine azimuth (positive right) and elevation to a SOFA-frame unit vector (y = left)."""
    az = math.radians(az_deg)
    el = math.radians(el_deg)
    ce = math.cos(el)
    return ce * math.cos(az), -ce * math.sin(az), math.sin(el)


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _read_frac(ring: np.ndarray, mask: int, pos: float, table: np.ndarray) -> float:
    """Windowed-sinc read of the mirrored ``ring`` at fractional absolute position ``pos``."""
    ip = math.floor(pos)
    ph = (pos - ip) * INTERP_PHASES
    k = int(ph)
    u = np.float32(ph - k)
    b = (int(ip) - (INTERP_HALF - 1)) & mask
    r0 = table[k]
    r1 = table[k + 1]
    acc = np.float32(0.0)
    for q in range(INTERP_TAPS):
        acc += (r0[q] + u * (r1[q] - r0[q])) * ring[b + q]
    return acc


@njit(cache=True, nogil=True, fastmath=True)
def _conv(hr: np.ndarray, src: np.ndarray, s0: int, n: int, dst: np.ndarray, d0: int) -> None:
    """``dst[d0 + j] = sum_m hr[m] * src[s0 + j + m]`` for j < n (``hr`` time-reversed FIR).

    Eight outputs per pass over the taps: LLVM keeps them in one vector register, which is
    about twice as fast as one reduction per output.
    """
    taps = hr.shape[0]
    j = 0
    while j + 8 <= n:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        for m in range(taps):
            c = hr[m]
            b = s0 + j + m
            a0 += c * src[b]
            a1 += c * src[b + 1]
            a2 += c * src[b + 2]
            a3 += c * src[b + 3]
            a4 += c * src[b + 4]
            a5 += c * src[b + 5]
            a6 += c * src[b + 6]
            a7 += c * src[b + 7]
        dst[d0 + j] = a0
        dst[d0 + j + 1] = a1
        dst[d0 + j + 2] = a2
        dst[d0 + j + 3] = a3
        dst[d0 + j + 4] = a4
        dst[d0 + j + 5] = a5
        dst[d0 + j + 6] = a6
        dst[d0 + j + 7] = a7
        j += 8
    while j < n:
        acc = np.float32(0.0)
        for m in range(taps):
            acc += hr[m] * src[s0 + j + m]
        dst[d0 + j] = acc
        j += 1


@njit(cache=True, nogil=True, fastmath=True)
def _fill_const(ring: np.ndarray, mask: int, a: int, d: float, table: np.ndarray,
                dst: np.ndarray, off: int, n: int, c: np.ndarray) -> None:
    """``dst[off + j] = x(a + j - d)`` for j < n with one coefficient set (constant delay);
    ``c`` is caller-owned scratch of ``INTERP_TAPS`` floats."""
    pos = a - d
    ip = math.floor(pos)
    ph = (pos - ip) * INTERP_PHASES
    k = int(ph)
    u = np.float32(ph - k)
    b = (int(ip) - (INTERP_HALF - 1)) & mask
    if k == 0 and u == 0.0:
        for j in range(n):
            dst[off + j] = ring[b + INTERP_HALF - 1 + j]
        return
    for q in range(INTERP_TAPS):
        c[q] = table[k, q] + u * (table[k + 1, q] - table[k, q])
    _conv(c, ring, b, n, dst, off)


@njit(cache=True, nogil=True, fastmath=True)
def _fir_add(hr: np.ndarray, hb: np.ndarray, n: int, out: np.ndarray, o0: int, ch: int,
             tmp: np.ndarray) -> None:
    """``out[o0 + j, ch] += sum_m hr[m] * hb[j + m]`` (``hr`` is stored time-reversed)."""
    _conv(hr, hb, 0, n, tmp, 0)
    for j in range(n):
        out[o0 + j, ch] += tmp[j]


@njit(cache=True, nogil=True, fastmath=True)
def _fir_fade_add(ha: np.ndarray, hba: np.ndarray, hb: np.ndarray, hbb: np.ndarray, n: int,
                  i0: int, period: int, out: np.ndarray, o0: int, ch: int,
                  tmp: np.ndarray) -> None:
    """Crossfade of two FIRs: ``ya + g (yb - ya)``, ``g = (i0 + j + 1) / period``."""
    _conv(ha, hba, 0, n, tmp, 0)
    _conv(hb, hbb, 0, n, tmp, n)
    inv = np.float32(1.0 / period)
    for j in range(n):
        g = np.float32(i0 + j + 1) * inv
        ya = tmp[j]
        out[o0 + j, ch] += ya + g * (tmp[n + j] - ya)


@njit(cache=True, nogil=True)
def _update_source(s: int, a: int, tgt: np.ndarray, rot: np.ndarray, ring: np.ndarray,
                   hist2: np.ndarray, hf: np.ndarray, ht: np.ndarray, df: np.ndarray,
                   dt: np.ndarray, mode: np.ndarray, last: np.ndarray,
                   filt: np.ndarray, dly: np.ndarray, tri: np.ndarray, tri_inv: np.ndarray,
                   nbr: np.ndarray, grid: np.ndarray, table: np.ndarray, cfg: np.ndarray,
                   scratch: np.ndarray) -> None:
    """Resolve source ``s``'s target for the update period starting at absolute sample ``a``."""
    fs = cfg[C_FS]
    period = int(cfg[C_PERIOD])
    # position at the last sample of the period (where the crossfade reaches it)
    tsec = (a + period - 1 - tgt[s, T_ANCHOR]) / fs
    az = tgt[s, T_AZ] + tgt[s, T_ORBIT] * tsec
    wx, wy, wz = _source_vector(az, tgt[s, T_EL])
    vx = rot[0, 0] * wx + rot[0, 1] * wy + rot[0, 2] * wz
    vy = rot[1, 0] * wx + rot[1, 1] * wy + rot[1, 2] * wz
    vz = rot[2, 0] * wx + rot[2, 1] * wy + rot[2, 2] * wz
    nrm = math.sqrt(vx * vx + vy * vy + vz * vz)
    vx /= nrm
    vy /= nrm
    vz /= nrm
    r = min(max(tgt[s, T_DIST], cfg[C_MIN_DIST]), cfg[C_MAX_DIST])
    gain = cfg[C_NORM] * tgt[s, T_GAIN] * cfg[C_REF_DIST] / r
    jump = tgt[s, T_JUMP] != 0.0
    m0 = mode[s]
    if (m0 == MODE_STATIC and not jump and last[s, 0] == vx and last[s, 1] == vy
            and last[s, 2] == vz and last[s, 3] == r and last[s, 4] == gain):
        return
    last[s, 0] = vx
    last[s, 1] = vy
    last[s, 2] = vz
    last[s, 3] = r
    last[s, 4] = gain
    tgt[s, T_JUMP] = 0.0
    t = grid_hint(grid, vx, vy, vz)
    t, w0, w1, w2 = locate(vx, vy, vz, tri_inv, nbr, t)
    i0 = tri[t, 0]
    i1 = tri[t, 1]
    i2 = tri[t, 2]
    prop = cfg[C_PROP] * (r - cfg[C_MIN_DIST])
    taps = ht.shape[2]
    big = 0.0
    for e in range(2):
        if m0 != MODE_INIT:
            for k in range(taps):
                hf[s, e, k] = ht[s, e, k]
            df[s, e] = dt[s, e]
        g0 = np.float32(gain * w0)
        g1 = np.float32(gain * w1)
        g2 = np.float32(gain * w2)
        for k in range(taps):
            ht[s, e, k] = g0 * filt[i0, e, k] + g1 * filt[i1, e, k] + g2 * filt[i2, e, k]
        dt[s, e] = w0 * dly[i0, e] + w1 * dly[i1, e] + w2 * dly[i2, e] + prop
        if m0 == MODE_INIT:
            for k in range(taps):
                hf[s, e, k] = ht[s, e, k]
            df[s, e] = dt[s, e]
        big = max(big, abs(dt[s, e] - df[s, e]))
    if m0 == MODE_INIT:
        mode[s] = MODE_STATIC
        return
    if jump or big > cfg[C_JUMP]:
        mode[s] = MODE_JUMP
        hlen = hist2.shape[2] - period
        mask = ring.shape[1] // 2 - 1
        for e in range(2):
            # history of the new path: the input already heard, read at the new delay
            _fill_const(ring[s], mask, a - hlen, dt[s, e], table, hist2[s, e], 0, hlen,
                        scratch)
    else:
        mode[s] = MODE_MOVING


@njit(cache=True, nogil=True, fastmath=True)
def render(x: np.ndarray, nfr: int, out: np.ndarray, abs0: int, tgt: np.ndarray,
           rot: np.ndarray, ring: np.ndarray, hist: np.ndarray, hist2: np.ndarray,
           hf: np.ndarray, ht: np.ndarray, df: np.ndarray, dt: np.ndarray, mode: np.ndarray,
           last: np.ndarray, filt: np.ndarray, dly: np.ndarray, tri: np.ndarray,
           tri_inv: np.ndarray, nbr: np.ndarray, grid: np.ndarray,
           table: np.ndarray, cfg: np.ndarray, scratch: np.ndarray) -> None:
    """Render ``nfr`` frames of the sources in ``x`` (frames, sources) into ``out[:nfr]`` (stereo).

    ``abs0`` is the absolute index of ``x[0]``. State arrays (``ring`` ... ``last``) belong to the
    caller and persist between calls; ``tgt`` rows are read at every update boundary. ``ring``
    is mirrored (each sample is written at ``i`` and ``i + len/2``) so every read window is
    contiguous. ``scratch`` holds at least ``INTERP_TAPS + 2 * period`` floats.
    """
    nsrc = x.shape[1]
    period = int(cfg[C_PERIOD])
    half = ring.shape[1] // 2
    mask = half - 1
    taps = ht.shape[2]
    hlen = taps - 1
    coef = scratch[:INTERP_TAPS]
    tmp = scratch[INTERP_TAPS:]
    for j in range(nfr):
        out[j, 0] = 0.0
        out[j, 1] = 0.0
    pos = 0
    while pos < nfr:
        a = abs0 + pos
        i0 = a % period
        n = min(nfr - pos, period - i0)
        for s in range(nsrc):
            if i0 == 0 or mode[s] == MODE_INIT:
                _update_source(s, a, tgt, rot, ring, hist2, hf, ht, df, dt, mode, last, filt,
                                dly, tri, tri_inv, nbr, grid, table, cfg, coef)
            rs = ring[s]
            for j in range(n):
                w = (a + j) & mask
                v = x[pos + j, s]
                rs[w] = v
                rs[w + half] = v
            m = mode[s]
            for e in range(2):
                hb = hist[s, e]
                if m == MODE_STATIC:
                    _fill_const(rs, mask, a, dt[s, e], table, hb, hlen, n, coef)
                    _fir_add(ht[s, e], hb, n, out, pos, e, tmp)
                elif m == MODE_MOVING:
                    d0 = df[s, e]
                    dd = (dt[s, e] - d0) / period
                    for j in range(n):
                        d = d0 + dd * (i0 + j + 1)
                        hb[hlen + j] = _read_frac(rs, mask, a + j - d, table)
                    _fir_fade_add(hf[s, e], hb, ht[s, e], hb, n, i0, period, out, pos, e, tmp)
                else:  # MODE_JUMP: old path fades out, new path fades in
                    hb2 = hist2[s, e]
                    _fill_const(rs, mask, a, df[s, e], table, hb, hlen, n, coef)
                    _fill_const(rs, mask, a, dt[s, e], table, hb2, hlen, n, coef)
                    _fir_fade_add(hf[s, e], hb, ht[s, e], hb2, n, i0, period, out, pos, e, tmp)
                    for k in range(hlen):
                        hb2[k] = hb2[n + k]
                    if i0 + n == period:  # the new path becomes the only one
                        for k in range(hlen):
                            hb[n + k] = hb2[k]
                for k in range(hlen):
                    hb[k] = hb[n + k]
            if i0 + n == period and m != MODE_STATIC:
                mode[s] = MODE_STATIC  # settled on the new position
        pos += n
