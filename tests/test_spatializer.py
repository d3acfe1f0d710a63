"""HRTF spatializer (``spatial.hrtf``): accuracy against the measured data set, motion, jumps,
controls, bad input and block-size independence.

Reference numbers come from the SOFA file itself (MIT KEMAR, resampled to 48 kHz with
:func:`engine.dsp.hrtf.resample_ir`); measurements use scipy (test-only dependency), not the
engine's own helpers, so the two implementations check each other.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib

h5py = pytest.importorskip("h5py")
signal = pytest.importorskip("scipy.signal")

from engine.dsp import hrtf  # noqa: E402
from engine.dsp import spatial_kernels as sk  # noqa: E402
from engine.errors import EngineError, NegotiationError, ParamError  # noqa: E402
from engine.events import Control  # noqa: E402
from engine.node import AudioSpec  # noqa: E402
from engine.nodes.spatializer import HrtfSpatializer  # noqa: E402
from engine.testing import run_node  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FS = 48000
P = HrtfSpatializer.Params
CENTRES = 1000.0 * 2.0 ** (np.arange(-7, 11) / 3)  # third octaves 198 Hz .. 10.1 kHz


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A private cache directory: the first preparation is cold, later ones read the .npz."""
    d = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDIO_ENGINE_CACHE", str(d))
    hrtf._MEMO.clear()
    yield d
    mp.undo()
    hrtf._MEMO.clear()


@pytest.fixture(scope="module")
def hs(cache) -> hrtf.HrtfSet:
    return hrtf.prepare_hrtf(None, FS, 128)


@pytest.fixture(scope="module")
def sofa() -> hrtf.SofaData:
    return hrtf.load_sofa(hrtf.DEFAULT_SOFA)


@pytest.fixture(scope="module")
def full48(sofa) -> np.ndarray:
    """The complete measured responses at 48 kHz (M, 2, N)."""
    return hrtf.resample_ir(sofa.ir, sofa.sample_rate, FS)


def node(*sources: dict, **kw) -> HrtfSpatializer:
    return HrtfSpatializer("sp", P(sources=list(sources), **kw))


def render_ir(az: float, el: float, n: int = 1024, fs: int = FS) -> np.ndarray:
    """Impulse response (2, n) of a still source rendered by the node, unit gain, no propagation."""
    x = np.zeros(n, np.float32)
    x[0] = 1.0
    nd = node({"name": "s", "azimuth": az, "elevation": el}, normalize=False, doppler=False)
    return run_node(nd, x, fs, n).audio["audio"].T.astype(np.float64)


def band_energy(h: np.ndarray, fs: int = FS, nfft: int = 16384) -> np.ndarray:
    spec = np.abs(np.fft.rfft(h, nfft)) ** 2
    f = np.fft.rfftfreq(nfft, 1 / fs)
    return np.stack([spec[..., (f >= c * 2 ** (-1 / 6)) & (f < c * 2 ** (1 / 6))].sum(-1)
                     for c in CENTRES], axis=-1)


_SOS_ITD = signal.butter(4, [100, 1500], "bandpass", fs=FS, output="sos")
_SOS_ILD = signal.butter(4, [1000, 16000], "bandpass", fs=FS, output="sos")


def itd_us(left: np.ndarray, right: np.ndarray, pad: int = 8192, up: int = 16) -> float:
    """Interaural lag of the 100-1500 Hz band-passed pair (scipy Butterworth, 16x upsampled
    cross-correlation, parabolic peak); positive when the left ear lags (source on the right)."""
    x = np.zeros((2, pad))
    x[0, : len(left)] = left
    x[1, : len(right)] = right
    y = signal.sosfilt(_SOS_ITD, x, axis=-1)
    n = 2 * pad
    c = np.fft.irfft(np.fft.rfft(y[0], n) * np.conj(np.fft.rfft(y[1], n)), n * up)
    lim = int(0.0015 * FS * up)
    lags = np.r_[0:lim, -lim:0]
    cc = np.r_[c[:lim], c[-lim:]]
    i = int(np.argmax(cc))
    y0, y1, y2 = cc[i - 1], cc[i], cc[(i + 1) % len(cc)]
    return (lags[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / up / FS * 1e6


def ild_db(left: np.ndarray, right: np.ndarray, pad: int = 8192) -> float:
    x = np.zeros((2, pad))
    x[0, : len(left)] = left
    x[1, : len(right)] = right
    y = signal.sosfilt(_SOS_ILD, x, axis=-1)
    return 10 * np.log10((y[0] ** 2).sum() / (y[1] ** 2).sum())


def delayed(h: np.ndarray, d: np.ndarray, n: int = 1024) -> np.ndarray:
    """FIRs (..., taps) delayed by exact fractional ``d`` samples (band-limited)."""
    nfft = 4096
    f = np.fft.rfftfreq(nfft)
    return np.fft.irfft(np.fft.rfft(h, nfft) * np.exp(-2j * np.pi * f * d[..., None]),
                        nfft)[..., :n]


# ---------------------------------------------------------------------------------------------
# preparation and cache


def test_cache_roundtrip_and_load_time(cache, hs) -> None:
    files = list((cache / "hrtf").glob("MIT_KEMAR_normal_pinna-*-48000-128-v*.npz"))
    assert len(files) == 1
    hrtf._MEMO.clear()
    t0 = time.perf_counter()
    again = hrtf.prepare_hrtf(None, FS, 128)
    assert time.perf_counter() - t0 < 1.0  # cached set loads in well under a second
    for name in ("filters", "delays", "tri", "grid", "dirs"):
        np.testing.assert_array_equal(getattr(again, name), getattr(hs, name))
    hrtf._MEMO[(again.source_sha256, FS, 128)] = hs


def test_prepared_set_shape(hs) -> None:
    assert hs.filters.shape == (711, 2, 128)  # 710 measured + the synthetic south pole
    assert hs.measured.sum() == 710 and not hs.measured[-1]
    assert np.isclose(hs.delays.min(), sk.INTERP_HALF)
    # a closed triangulation of the sphere: Euler (V - E + F = 2, E = 3F/2)
    assert len(hs.tri) == 2 * len(hs.dirs) - 4
    # every measured direction is found as a vertex with weight 1
    idx, w = hs.lookup_vectors(hs.dirs[hs.measured])
    k = np.argmax(w, axis=1)
    assert np.all(idx[np.arange(len(idx)), k] == np.flatnonzero(hs.measured))
    assert np.all(w.max(axis=1) > 1 - 1e-9)


def test_common_delay_is_smooth(hs) -> None:
    """The mean-ear delay carries no cue; direction-to-direction jitter in it would
    frequency-modulate a moving source (it put -75 dBc at 1125 Hz into a 360 deg/s orbit)."""
    el = np.degrees(np.arcsin(np.clip(hs.dirs[:, 2], -1, 1)))
    az = np.degrees(np.arctan2(hs.dirs[:, 1], hs.dirs[:, 0])) % 360
    ring = np.flatnonzero(np.abs(el) < 1e-6)
    ring = ring[np.argsort(az[ring])]
    mid = hs.delays[ring].mean(axis=1) / FS * 1e6
    curv = np.abs(np.diff(np.r_[mid, mid[:2]], 2))  # us, second difference over 5 degrees
    print(f"\ncommon delay round the horizontal plane: largest second difference "
          f"{curv.max():.2f} us")
    assert curv.max() < 5.0
    k = np.arange(4000) + 0.5  # Fibonacci sphere: the fit's basis is orthonormal on the sphere
    z = 1 - 2 * k / 4000
    phi = np.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - z * z)
    b = hrtf.sh_basis(np.stack([r * np.cos(phi), r * np.sin(phi), z], 1), 6)
    np.testing.assert_allclose(b.T @ b / len(b), np.eye(49), atol=1e-3)


def test_azimuth_convention(hs) -> None:
    """Engine azimuth +90 is the right ear (SOFA's +90 is left)."""
    y = render_ir(90.0, 0.0)
    assert (y[1] ** 2).sum() > 10 * (y[0] ** 2).sum()
    assert itd_us(y[0], y[1]) > 500  # left ear lags


# ---------------------------------------------------------------------------------------------
# static accuracy against the measured data set


@pytest.mark.parametrize("fs,step", [(48000, 3), (44100, 9)])
def test_static_matches_full_measured_response(sofa, fs, step) -> None:
    full = hrtf.resample_ir(sofa.ir, sofa.sample_rate, fs)
    errs = []
    for i in range(0, len(sofa.azimuth), step):
        y = render_ir(-sofa.azimuth[i], sofa.elevation[i], fs=fs)
        errs.append(10 * np.log10(band_energy(y, fs) / band_energy(full[i], fs)))
    e = np.abs(np.array(errs))
    p99 = np.percentile(e, 99)
    print(f"\nstatic {fs} Hz, {len(errs)} directions: third-octave error p99 {p99:.2f} dB, "
          f"mean {e.mean():.3f} dB, max {e.max():.2f} dB")
    assert p99 <= 1.0


def test_itd_ild_match_dataset(sofa, full48) -> None:
    sel = [i for i in range(len(sofa.azimuth)) if sofa.elevation[i] in (-30, 0, 20, 50)]
    e_itd, e_ild = [], []
    for i in sel[::2]:
        y = render_ir(-sofa.azimuth[i], sofa.elevation[i])
        e_itd.append(itd_us(y[0], y[1]) - itd_us(full48[i, 0], full48[i, 1]))
        e_ild.append(ild_db(y[0], y[1]) - ild_db(full48[i, 0], full48[i, 1]))
    e_itd, e_ild = np.abs(e_itd), np.abs(e_ild)
    print(f"\n{len(e_itd)} directions: ITD error max {e_itd.max():.2f} us, "
          f"ILD error max {e_ild.max():.3f} dB")
    assert e_itd.max() <= 10.0
    assert e_ild.max() <= 0.5


def test_itd_is_smooth_in_azimuth(hs, sofa, full48) -> None:
    """ITD in 0.5-degree steps round the horizontal plane.

    The issue's 5 us per 0.5 degree cannot be met together with its 10 us agreement on this
    data set: the data's own cross-correlation ITD falls 97 us between its points at 115 and
    120 degrees (157.9 us over 115..125), so any rendering within 10 us of it needs a step of at
    least 7.74 us somewhere (printed below as the bound). What is asserted instead: no step
    above 5 us except where the data's own ITD changes faster between its 5-degree points, and
    there no more than 10 % above the data's slope on that segment or its neighbours; between
    points the rendered ITD follows the data's (linear) course within 5 us."""
    az = np.arange(0.0, 360.001, 0.5)
    h, d = hs.response(az, np.zeros_like(az))
    pairs = delayed(h, d)
    itd = np.array([itd_us(p[0], p[1]) for p in pairs])
    steps = np.abs(np.diff(itd))
    ring = np.flatnonzero(sofa.elevation == 0)
    ring = ring[np.argsort(-sofa.azimuth[ring] % 360)]  # engine azimuth order
    ring_az = -sofa.azimuth[ring] % 360
    ring_itd = np.array([itd_us(full48[i, 0], full48[i, 1]) for i in ring])
    # lower bound of the largest step for any rendering within 10 us of the data (pairs of
    # data points k, m: |ITD_k - ITD_m| <= step * (0.5-degree steps between them) + 2 * 10 us)
    gap = np.abs(ring_az[:, None] - ring_az[None, :])
    gap = np.minimum(gap, 360 - gap) / 0.5
    off = gap > 0
    bound = np.max((np.abs(ring_itd[:, None] - ring_itd[None, :]) - 20.0)[off] / gap[off])
    ring_az = np.r_[ring_az, 360.0]
    ring_itd = np.r_[ring_itd, ring_itd[0]]
    local = np.abs(np.diff(ring_itd)) / np.diff(ring_az) * 0.5  # data's us per 0.5 degree
    seg = np.searchsorted(ring_az, az[:-1] + 0.25, side="right") - 1
    nb = np.maximum(np.maximum(local[seg], local[seg - 1]), local[(seg + 1) % len(local)])
    allowed = np.maximum(5.0, 1.1 * nb)
    course = np.abs(itd - np.interp(az, ring_az, ring_itd))
    print(f"\nITD steps per 0.5 deg: max {steps.max():.2f} us at {az[np.argmax(steps)]:.1f} deg, "
          f"{(steps > 5).sum()} of {len(steps)} above 5 us; data set's own max "
          f"{local.max():.2f} us per 0.5 deg; least possible max step within 10 us of the data "
          f"{bound:.2f} us; off the data's linear course by <= {course.max():.2f} us")
    assert np.all(steps <= allowed)
    assert course.max() <= 5.0

def test_interpolation_leave_one_out(hs, full48) -> None:
    """Directions on the 10-degree grid (el -30..60) left out of the triangulation and
    rebuilt from their neighbours: third-octave error against the left-out filter."""
    errs, errs_full = [], []
    az_s = np.degrees(np.arctan2(hs.dirs[:, 1], hs.dirs[:, 0]))
    el = np.degrees(np.arcsin(np.clip(hs.dirs[:, 2], -1, 1)))
    grid = [i for i in np.flatnonzero(hs.measured)
            if -30.5 < el[i] < 60.5 and abs(el[i] - 10 * round(el[i] / 10)) < 1e-6
            and abs(az_s[i] - 10 * round(az_s[i] / 10)) < 1e-6]
    for i in grid[::2]:
        q = hs.dirs[i]
        close = hs.dirs @ q > np.cos(np.radians(40))
        close[i] = False
        near = np.flatnonzero(close)
        pts = np.vstack([hs.dirs[near], -q])  # local hull; -q keeps the centre inside
        found = None
        for t in hrtf.convex_hull(pts):
            if len(pts) - 1 in t:
                continue
            w = np.linalg.solve(pts[t].T, q)
            if w.min() >= -1e-9:
                found = near[t], w / w.sum()
                break
        assert found is not None
        idx, w = found
        hb = np.einsum("k,kef->ef", w, hs.filters[idx].astype(np.float64))
        errs.append(10 * np.log10(band_energy(hb) / band_energy(hs.filters[i])))
        errs_full.append(10 * np.log10(band_energy(hb) / band_energy(full48[i])))
    e = np.abs(np.array(errs))
    ef = np.abs(np.array(errs_full))
    print(f"\nleave-one-out, {len(e)} directions: vs prepared filter mean {e.mean():.3f} dB, "
          f"p95 {np.percentile(e, 95):.3f} dB; vs full measured response mean {ef.mean():.3f} dB,"
          f" p95 {np.percentile(ef, 95):.3f} dB")
    assert e.mean() <= 0.3 and np.percentile(e, 95) <= 1.0


# ---------------------------------------------------------------------------------------------
# motion


def test_orbit_matches_per_sample_reference(hs) -> None:
    """A 1 kHz tone orbiting at 360 deg/s against a reference whose position (filter and delay)
    is updated every sample."""
    n_total, f0 = 36000, 1000.0
    n = np.arange(n_total)
    x = np.sin(2 * np.pi * f0 * n / FS).astype(np.float32)
    nd = node({"name": "s", "azimuth": 0.0, "orbit_deg_per_s": 360.0}, normalize=False,
              doppler=False)
    y = run_node(nd, x, FS, 128).audio["audio"].astype(np.float64)
    h, d = hs.response(360.0 * n / FS, np.zeros(n_total))
    ref = np.zeros((n_total, 2))
    for e in range(2):
        de = np.r_[np.zeros(127), np.sin(2 * np.pi * f0 * (n - d[:, e]) / FS)]
        win = np.lib.stride_tricks.sliding_window_view(de, 128)
        ref[:, e] = np.einsum("nj,nj->n", win, h[:, e, ::-1])
    del h, d
    sl = slice(4800, n_total)
    f = np.fft.rfftfreq(n_total - 4800, 1 / FS)
    win = signal.windows.blackmanharris(n_total - 4800)
    for e in range(2):
        sy = np.abs(np.fft.rfft(y[sl, e] * win)) ** 2
        sr = np.abs(np.fft.rfft(ref[sl, e] * win)) ** 2
        se = np.abs(np.fft.rfft((y[sl, e] - ref[sl, e]) * win)) ** 2  # what block updates add
        oob = np.abs(f - f0) > 100
        carrier = sy[~oob].sum()
        oob_y = 10 * np.log10(sy[oob].sum() / carrier)
        oob_r = 10 * np.log10(sr[oob].sum() / carrier)
        worst = (-999.0, -999.0, 0.0)  # (ours, reference, frequency) at our highest line
        worst_err = -999.0
        peak = (-999.0, -999.0, 0.0)  # (height over neighbourhood, level, frequency)
        for k in range(1, 40):
            for fc in (k * FS / 128, f0 + k * FS / 128, f0 - k * FS / 128):
                if not 20 < fc < FS / 2 - 20:
                    continue
                m = np.abs(f - fc) <= 3
                ly = 10 * np.log10(sy[m].max() / sy.max())
                lr = 10 * np.log10(sr[m].max() / sy.max())
                worst = max(worst, (ly, lr, fc))
                worst_err = max(worst_err, 10 * np.log10(se[m].max() / sy.max()))
                # height of the peak over the median of its neighbourhood (6-40 Hz away)
                around = (np.abs(f - fc) > 6) & (np.abs(f - fc) <= 40)
                peak = max(peak, (10 * np.log10(sy[m].max() / np.median(sy[around])), ly, fc))
        rel = np.sqrt(np.mean((y[sl, e] - ref[sl, e]) ** 2) / np.mean(ref[sl, e] ** 2))
        print(f"\near {e}: out-of-band {oob_y:.1f} dBc (per-sample reference {oob_r:.1f} dBc), "
              f"highest level at k*fs/128 (+-1 kHz) {worst[0]:.1f} dBc at {worst[2]:.0f} Hz "
              f"(reference there {worst[1]:.1f} dBc); most prominent {peak[1]:.1f} dBc at "
              f"{peak[2]:.0f} Hz, {peak[0]:.1f} dB over its neighbourhood; those frequencies in "
              f"the difference from the reference <= {worst_err:.1f} dBc; waveform error "
              f"{20 * np.log10(rel):.1f} dB")
        assert oob_y <= oob_r + 3.0  # no more than 3 dB above the per-sample reference
        assert worst[0] <= -80.0  # nothing at multiples of fs/block above -80 dBc
        assert worst_err <= -80.0  # block-rate updates add nothing there above -80 dBc either
        assert rel < 0.01


def test_jump_settles_in_one_block() -> None:
    n = np.arange(FS // 3)
    x = np.sin(2 * np.pi * 1000 * n / FS).astype(np.float32)
    j = 100 * 128
    ev = Control(sample=j, sample_rate=FS, target="sp",
                 values=(("source", "s"), ("azimuth", 90.0), ("jump", True)))
    y = run_node(node({"name": "s", "azimuth": -90.0}), x, FS, 128,
                 events={"control": [ev]}).audio["audio"].astype(np.float64)
    ya = run_node(node({"name": "s", "azimuth": -90.0}), x, FS, 128).audio["audio"]
    yb = run_node(node({"name": "s", "azimuth": 90.0}), x, FS, 128).audio["audio"]
    np.testing.assert_array_equal(y[:j], ya[:j])
    np.testing.assert_allclose(y[j + 128:], yb[j + 128:], atol=1e-6)  # settled after one block

    def env(s: np.ndarray) -> np.ndarray:
        return np.sqrt(np.convolve(s ** 2, np.ones(48) / 48, "same"))

    for e in range(2):
        before = env(ya[:, e].astype(np.float64))[j - 2000: j - 100].mean()
        after = env(yb[:, e].astype(np.float64))[j + 1000: j + 3000].mean()  # input ends j+3200
        peak = env(y[:, e])[j - 200: j + 400].max()
        over = 20 * np.log10(peak / max(before, after))
        print(f"\near {e}: {20 * np.log10(before):.2f} -> {20 * np.log10(after):.2f} dB, "
              f"overshoot {over:.3f} dB")
        assert over <= 0.5


def test_large_step_without_jump_flag_does_not_sweep() -> None:
    """A 180-degree step (ITD flips by ~1.3 ms) is crossfaded, not swept as a pitch glide."""
    x = np.random.default_rng(1).standard_normal(FS // 4).astype(np.float32)
    ev = Control(sample=6400, sample_rate=FS, target="sp", values=(("azimuth", 90.0),))
    y = run_node(node({"name": "s", "azimuth": -90.0}), x, FS, 128,
                 events={"control": [ev]}).audio["audio"]
    yb = run_node(node({"name": "s", "azimuth": 90.0}), x, FS, 128).audio["audio"]
    np.testing.assert_allclose(y[6400 + 128:], yb[6400 + 128:], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# geometry: orientation and distance


@pytest.mark.parametrize("src,listener,equiv", [
    ((90.0, 0.0), {"yaw": 90.0}, (0.0, 0.0)),
    ((0.0, 0.0), {"pitch": 30.0}, (0.0, -30.0)),
    ((90.0, 0.0), {"roll": 30.0}, (90.0, 30.0)),
    ((-30.0, 10.0), {"yaw": -30.0, "pitch": 10.0}, (0.0, 0.0)),
])
def test_listener_orientation(src, listener, equiv) -> None:
    x = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    a = run_node(node({"name": "s", "azimuth": src[0], "elevation": src[1]}, **listener), x, FS,
                 128).audio["audio"]
    b = run_node(node({"name": "s", "azimuth": equiv[0], "elevation": equiv[1]}), x, FS,
                 128).audio["audio"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_distance_gain_and_propagation_delay() -> None:
    x = np.zeros(2048, np.float32)
    x[0] = 1.0
    ys = {}
    for r in (0.1, 0.25, 1.0, 2.0):
        ys[r] = run_node(node({"name": "s", "distance": r}), x, FS, 256).audio["audio"]
    e = {r: float((y.astype(np.float64) ** 2).sum()) for r, y in ys.items()}
    assert e[0.1] == pytest.approx(e[0.25], rel=1e-4)  # min_distance clamps the 1/r gain
    assert e[2.0] / e[1.0] == pytest.approx(0.25, rel=0.02)
    lag = int(np.argmax(np.abs(ys[2.0][:, 0]))) - int(np.argmax(np.abs(ys[1.0][:, 0])))
    assert abs(lag - 1.0 / hrtf.SPEED_OF_SOUND * FS) <= 1.0


@pytest.mark.parametrize("distance", [1.0, 20.0])
def test_the_tail_comes_out_at_the_end_of_the_stream(distance: float) -> None:
    """A sound just before the end still reaches the ears: flush() renders the propagation
    delay (58 ms at 20 m), the far ear's delay and the filter tail (it was cut off: 0 % of a
    burst at the very end arrived from 20 m)."""
    x = np.zeros(FS, np.float32)
    x[-2400:] = np.random.default_rng(1).standard_normal(2400).astype(np.float32) * 0.1
    still = node({"name": "s", "azimuth": 60.0, "distance": distance})
    y = run_node(still, x, FS, 480).audio["audio"].astype(np.float64)
    longer = np.concatenate([x, np.zeros(FS // 2, np.float32)])
    ref = run_node(node({"name": "s", "azimuth": 60.0, "distance": distance}), longer, FS,
                   480, flush=False).audio["audio"].astype(np.float64)
    assert len(y) > len(x)
    np.testing.assert_allclose(y, ref[: len(y)], atol=1e-6)  # the tail is the true one
    assert np.sum(y ** 2) >= 0.999 * np.sum(ref ** 2)  # and nothing is left behind


def test_level_does_not_depend_on_the_sample_rate() -> None:
    """The same band-limited sound straight ahead comes out equally loud at 16 to 96 kHz
    (the normalisation counted the band above the HRTF data: -27.3 dBFS at 16 kHz, -20.8 at
    96 kHz)."""
    from scipy.signal import butter, sosfilt

    levels = {}
    for fs in (16000, 22050, 44100, 48000, 96000):
        noise = np.random.default_rng(2).standard_normal(fs * 2)
        x = sosfilt(butter(4, (200, 3500), "bandpass", fs=fs, output="sos"), noise)
        x = (0.1 * x / np.sqrt(np.mean(x ** 2))).astype(np.float32)
        y = run_node(node({"name": "s", "azimuth": 0.0}), x, fs, 512).audio["audio"]
        levels[fs] = 10 * np.log10(np.mean(y[fs // 2: -fs // 2].astype(np.float64) ** 2))
    print({k: round(v, 2) for k, v in levels.items()})
    assert max(levels.values()) - min(levels.values()) < 1.0


# ---------------------------------------------------------------------------------------------
# block size, controls, threads


def _scenario(block: int) -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((12000, 2)).astype(np.float32)
    nd = node({"name": "a", "azimuth": 20, "orbit_deg_per_s": 90},
              {"name": "b", "azimuth": -45, "elevation": 15, "distance": 2.0})
    evs = [Control(sample=3001, sample_rate=FS, target="sp",
                   values=(("source", "b"), ("azimuth", -40.0), ("distance", 2.1))),
           Control(sample=5000, sample_rate=FS, target="sp", values=(("yaw", 15.0),)),
           Control(sample=7000, sample_rate=FS, target="sp",
                   values=(("source", "a"), ("azimuth", 170.0), ("jump", True))),
           Control(sample=9000, sample_rate=FS, target="other", values=(("azimuth", 1.0),))]
    return run_node(nd, x, FS, block, events={"control": evs}).audio["audio"]


def test_output_independent_of_block_size() -> None:
    ref = _scenario(128)
    # 12000 frames and the tail flush() renders (2.1 m of propagation, ITD, filter)
    assert ref.shape[1] == 2 and 12000 < len(ref) < 12600 and np.abs(ref).max() > 0.1
    for block in (1, 37, 480, 1024):
        np.testing.assert_allclose(_scenario(block), ref, atol=2e-5, err_msg=f"block {block}")


def test_control_call_and_thread_safety() -> None:
    nd = node({"name": "voice", "azimuth": 0.0}, {"name": "fx", "azimuth": 10.0})
    spec = AudioSpec(FS, 2, 128)
    out_spec = nd.negotiate({"audio": spec})
    nd.prepare({"audio": spec, **out_spec})
    from engine.node import NodeIO
    io = NodeIO("sp", {"audio": np.zeros((128, 2), np.float32)}, [])
    x = np.random.default_rng(4).standard_normal((128, 2)).astype(np.float32) * 0.1
    stop = threading.Event()
    errors: list[BaseException] = []

    def controller() -> None:
        rng = np.random.default_rng(5)
        try:
            while not stop.is_set():
                nd.control({"source": "voice", "azimuth": float(rng.uniform(-180, 180)),
                            "elevation": float(rng.uniform(-40, 90)),
                            "distance": float(rng.uniform(0.5, 3))})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=controller)
    th.start()
    try:
        for _ in range(300):
            io._in = {"audio": x}
            nd.process(io)
            assert np.all(np.isfinite(io.out("audio")))
    finally:
        stop.set()
        th.join()
    assert not errors
    nd.control({"source": "voice", "azimuth": 45.0, "elevation": 5.0, "distance": 1.5})
    nd.control({"yaw": 10.0})
    io._in = {"audio": x}
    nd.process(io)
    assert tuple(nd._tgt[0, :3]) == (45.0, 5.0, 1.5)
    assert nd._ypr[0] == 10.0 and nd.stats()["controls_applied"] > 2


# ---------------------------------------------------------------------------------------------
# bad input


def _write_sofa(path: Path, conventions: str = "SimpleFreeFieldHRIR", **over) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_(over.get("top", "SOFA"))
        f.attrs["SOFAConventions"] = np.bytes_(conventions)
        f.attrs["DataType"] = np.bytes_("FIR" if conventions.endswith("IR") else "TF")
        m = 8
        f["Data.IR"] = over.get("ir", np.random.default_rng(0).standard_normal((m, 2, 64)))
        f["Data.SamplingRate"] = np.array([48000.0])
        el = np.array([0, 0, 0, 0, 60, 60, -60, -60.0])
        az = np.array([0, 90, 180, 270, 45, 225, 135, 315.0])
        f["SourcePosition"] = np.stack([az, el, np.ones(m)], 1)


def test_sofa_of_another_convention_is_refused(tmp_path) -> None:
    p = tmp_path / "tf.sofa"
    _write_sofa(p, "SimpleFreeFieldTF")
    with pytest.raises(hrtf.HrtfError, match="SimpleFreeFieldTF.*only 'SimpleFreeFieldHRIR'"):
        hrtf.load_sofa(p)
    q = tmp_path / "notsofa.h5"
    _write_sofa(q, top="netCDF")
    with pytest.raises(hrtf.HrtfError, match="not SOFA"):
        hrtf.load_sofa(q)


def test_truncated_or_foreign_file_is_refused(tmp_path) -> None:
    data = hrtf.DEFAULT_SOFA.read_bytes()
    p = tmp_path / "cut.sofa"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(hrtf.HrtfError, match="truncated, corrupt or not a SOFA file"):
        hrtf.load_sofa(p)
    with pytest.raises(EngineError, match="truncated"):
        HrtfSpatializer("sp", P(hrtf=str(p))).prepare({"audio": AudioSpec(FS, 1, 128)})
    t = tmp_path / "text.sofa"
    t.write_text("hello")
    with pytest.raises(hrtf.HrtfError):
        hrtf.load_sofa(t)
    with pytest.raises(hrtf.HrtfError, match="not found"):
        hrtf.prepare_hrtf(tmp_path / "missing.sofa")


def test_nan_in_sofa_is_refused(tmp_path) -> None:
    ir = np.zeros((8, 2, 64))
    ir[3, 1, 5] = np.nan
    p = tmp_path / "nan.sofa"
    _write_sofa(p, ir=ir)
    with pytest.raises(hrtf.HrtfError, match="NaN"):
        hrtf.load_sofa(p)


def test_small_custom_set_with_data_delay(tmp_path) -> None:
    """A coarse 8-direction set with its ITD in Data.Delay loads, and the delay shows up."""
    p = tmp_path / "tiny.sofa"
    m, n = 8, 64
    ir = np.zeros((m, 2, n))
    ir[:, :, 2] = 1.0
    _write_sofa(p, ir=ir)
    with h5py.File(p, "a") as f:
        d = np.zeros((m, 2))
        d[1, 0] = 20.0  # SOFA azimuth 90 (left): the left ear lags by 20 samples
        f["Data.Delay"] = d
    s = hrtf.build_hrtf(hrtf.load_sofa(p), 48000, 32)
    assert s.dirs.shape[0] == 10 and s.measured.sum() == 8  # both poles were 30 degrees away
    i = int(np.argmax(s.dirs @ np.array([0.0, 1.0, 0.0])))
    assert s.delays[i, 0] - s.delays[i, 1] == pytest.approx(20.0, abs=0.05)


@pytest.mark.parametrize("values,match", [
    ({"source": "voice", "azimuth": float("nan")}, "azimuth: is nan"),
    ({"source": "voice", "elevation": 91}, "elevation: 91.0 is outside -90..90"),
    ({"source": "voice", "distance": 0}, "distance: 0.0 m is outside"),
    ({"source": "voice", "distance": 1e4}, "raise max_distance"),
    ({"source": "voicee", "azimuth": 1}, "no source named 'voicee'.*did you mean 'voice'"),
    ({"source": 5, "azimuth": 1}, "source index 5 is out of range"),
    ({"azimut": 1}, "unknown key 'azimut'.*did you mean 'azimuth'"),
    ({"azimuth": 1}, "say which source"),
    ({"yaw": float("inf")}, "yaw: is inf"),
    ({"source": "voice", "azimuth": "left"}, "azimuth: must be a number"),
])
def test_bad_controls_are_refused(values, match) -> None:
    nd = node({"name": "voice"}, {"name": "fx"})
    with pytest.raises(ParamError, match=match):
        nd.control(values)


def test_bad_params_and_formats_are_refused() -> None:
    with pytest.raises(ParamError, match=r"sources\[0\]\.elevation: 120.0 is outside"):
        node({"name": "a", "elevation": 120})
    with pytest.raises(ParamError, match="azimuth: is nan"):
        node({"name": "a", "azimuth": float("nan")})
    with pytest.raises(ParamError, match="unknown key 'azimth'"):
        node({"name": "a", "azimth": 3})
    with pytest.raises(ParamError, match="names must be unique"):
        node({"name": "a"}, {"name": "a"})
    assert HrtfSpatializer.validate_params(P(hrtf="/nonexistent.sofa"))[0].startswith("hrtf:")
    nd = node({"name": "a"}, {"name": "b"})
    with pytest.raises(NegotiationError, match="2 sources .*one entry in 'sources' per input"):
        nd.negotiate({"audio": AudioSpec(FS, 1, 128)})


def test_bad_control_event_is_counted_not_fatal() -> None:
    x = np.random.default_rng(6).standard_normal(2000).astype(np.float32)
    ev = Control(sample=500, sample_rate=FS, target="sp",
                 values=(("azimuth", float("nan")),))
    nd = node({"name": "a", "azimuth": 30.0})
    y = run_node(nd, x, FS, 128, events={"control": [ev]}).audio["audio"]
    ref = run_node(node({"name": "a", "azimuth": 30.0}), x, FS, 128).audio["audio"]
    np.testing.assert_array_equal(y, ref)
    assert nd.stats()["controls_rejected"] == 1
    assert "azimuth: is nan" in nd.stats()["last_control_error"]


# ---------------------------------------------------------------------------------------------
# graph file and packaging


def test_demo_graph_file() -> None:
    g = tomllib.loads((ROOT / "graphs/spatial_demo.toml").read_text())
    sp = next(n for n in g["nodes"] if n["type"] == "spatial.hrtf")
    assert sp["params"]["sources"][0]["name"] == "voice"
    try:
        from engine.graph import load_graph
    except ImportError:
        pytest.skip("engine.graph not available")
    spec = load_graph(ROOT / "graphs/spatial_demo.toml")
    decl = spec.node(sp["id"])
    assert decl.cls is HrtfSpatializer
    nd = HrtfSpatializer(decl.id, decl.params)
    out = nd.negotiate({"audio": AudioSpec(FS, 1, 481)})["audio"]
    assert (out.sample_rate, out.channels) == (FS, 2)
    assert out.max_block >= 481  # room for the tail flush() renders at the end


def test_bundled_data_has_attribution() -> None:
    lic = (hrtf.DEFAULT_SOFA.parent / "MIT_KEMAR_normal_pinna.LICENSE.txt").read_text()
    assert "Gardner" in lic and "Martin" in lic and "MIT Media" in lic
    assert math.isclose(hrtf.DEFAULT_SOFA.stat().st_size, 1173158)
