"""Streaming resampler: block-size invariance, accuracy against ideal and scipy references, node.

Accuracy is measured on band-limited signals (white noise brick-wall filtered to 0.9 x the lower
Nyquist, and a linear sweep staying below 0.9 x) against two references, after removing our
integer delay ``latency_out`` and trimming 0.1 s at each end (start-up/stop transients):

* the ideal band-limited resampling: FFT resampling of the (periodic) noise, and the analytic
  sweep evaluated at the output instants;
* ``scipy.signal.resample_poly`` with an independently designed long filter (``firwin``, Kaiser
  beta 12, half-length 80 x max(up, down)). ``resample_poly``'s *default* filter (Kaiser beta 5,
  half-length 10 x max) is itself only ~ -55 dB flat and is -3 dB at the lower Nyquist, so it
  cannot serve as a -80 dB reference at 0.9 x Nyquist; it is checked at a looser bound.

The error is the full-band error energy over the reference energy, so for upsampling it includes
any images left above the input Nyquist.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from engine.dsp.resample import StreamingResampler, stream_sizes
from engine.node import node_types
from engine.nodes.resample import Resample
from engine.testing import run_node

PAIRS = [(48000, 16000), (44100, 16000), (16000, 48000), (22050, 16000), (8000, 16000)]
BLOCKS = [1, 7, 160, 480, 4096]
PASS = 0.9  # passband edge, fraction of the lower Nyquist
LIMIT_DB = -80.0

_cache: dict[tuple, StreamingResampler] = {}


def resampler(a: int, b: int, ch: int = 1, quality: str = "high") -> StreamingResampler:
    key = (a, b, ch, quality)
    if key not in _cache:
        _cache[key] = StreamingResampler(a, b, ch, quality)
    rs = _cache[key]
    rs.reset()
    return rs


def stream(rs: StreamingResampler, x: np.ndarray, blocks) -> np.ndarray:
    """Run ``x`` through ``rs`` in the given block sizes (an int, or a cycled list), then flush."""
    sizes = [blocks] if isinstance(blocks, int) else list(blocks)
    out = np.full((rs.max_output(max(max(sizes), 1)) + 3, rs.channels), np.nan, np.float32)
    parts = []
    pos, i = 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        i += 1
        blk = x[pos:pos + n]
        got = rs.process(blk, out)
        assert got <= rs.max_output(len(blk))
        parts.append(out[:got].copy())
        pos += n
    tail = np.zeros((rs.max_flush, rs.channels), np.float32)
    got = rs.flush(tail)
    parts.append(tail[:got].copy())
    return np.concatenate(parts)


def db(err: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(err.astype(np.float64) ** 2) / np.sum(ref ** 2)))


def bandlimited_noise(rate: int, n: int, edge_hz: float, seed: int = 0) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / rate) > edge_hz] = 0
    x = np.fft.irfft(spec, n)
    return x / (1.05 * np.max(np.abs(x)))


def sweep(t: np.ndarray, f0: float, f1: float, dur: float) -> np.ndarray:
    return 0.9 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t * t))


# -------------------------------------------------------------------------------------------
# block-size invariance


@pytest.fixture(scope="module")
def stereo_noise() -> np.ndarray:
    # 10000 frames: more than the kernel's internal chunk, so buffer compaction is exercised
    return np.random.default_rng(1).uniform(-1, 1, (10000, 2)).astype(np.float32)


@pytest.mark.parametrize("a,b", PAIRS)
def test_block_size_invariance(a: int, b: int, stereo_noise: np.ndarray) -> None:
    rs = resampler(a, b, 2)
    ref = stream(rs, stereo_noise, len(stereo_noise))
    up, down = rs.up, rs.down
    assert len(ref) == rs.latency_out + -(-len(stereo_noise) * up // down)
    assert np.all(np.isfinite(ref)) and np.max(np.abs(ref)) > 0.1
    for block in BLOCKS:
        rs.reset()
        y = stream(rs, stereo_noise, block)
        assert np.array_equal(y, ref), f"block {block} differs from one big block"
    rs.reset()
    y = stream(rs, stereo_noise, [0, 3, 1, 0, 250, 17, 1024, 2])
    assert np.array_equal(y, ref), "irregular blocks differ"


def test_channels_are_independent(stereo_noise: np.ndarray) -> None:
    both = stream(resampler(44100, 16000, 2), stereo_noise, 480)
    for c in range(2):
        mono = stream(resampler(44100, 16000, 1), np.ascontiguousarray(stereo_noise[:, c:c + 1]),
                      160)
        assert np.array_equal(both[:, c:c + 1], mono)
        # a strided (non-contiguous) view is accepted and gives the same result
        strided = stream(resampler(44100, 16000, 1), stereo_noise[:, c:c + 1], 160)
        assert np.array_equal(strided, mono)


def test_reset_and_sizes() -> None:
    rs = resampler(48000, 16000)
    x = np.random.default_rng(2).uniform(-1, 1, (4800, 1)).astype(np.float32)
    y1 = stream(rs, x, 480)
    rs.reset()
    assert np.array_equal(stream(rs, x, 480), y1)
    assert stream_sizes(48000, 16000, 480) == (rs.max_output(480), rs.latency_out)
    assert stream_sizes(44100, 16000, 441)[0] == 160
    assert rs.max_output(0) == 0 and rs.max_output(1) == 1 and rs.max_output(3) == 1
    with pytest.raises(ValueError):
        rs.process(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError):
        StreamingResampler(48000, 16000, 1, quality="best")


def test_passthrough() -> None:
    rs = StreamingResampler(16000, 16000, 2)
    x = np.random.default_rng(3).uniform(-1, 1, (1000, 2)).astype(np.float32)
    assert rs.latency_out == 0
    assert np.array_equal(stream(rs, x, 7), x)


# -------------------------------------------------------------------------------------------
# accuracy


def _references(kind: str, a: int, b: int, rs: StreamingResampler):
    """(input at a, ideal output at b) for ~1 s of a band-limited test signal."""
    up, down = rs.up, rs.down
    edge = PASS * min(a, b) / 2
    n = down * (a // down)  # whole number of output frames for the FFT reference
    m = n * up // down
    if kind == "noise":
        x = bandlimited_noise(a, n, edge)
        ideal = signal.resample(x, m)  # exact for a periodic band-limited signal
    else:
        dur = n / a
        # 20 Hz up to 0.95 x the passband edge at the end of the kept (trimmed) part
        f1 = 20 + (0.95 * edge - 20) * dur / (dur - 0.1)
        x = sweep(np.arange(n) / a, 20.0, f1, dur)
        ideal = sweep(np.arange(m) / b, 20.0, f1, dur)
    return x.astype(np.float32), ideal


def _precise_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    r = max(up, down)
    h = signal.firwin(2 * 80 * r + 1, 1.0 / r, window=("kaiser", 12.0))
    return signal.resample_poly(x.astype(np.float64), up, down, window=h)


@pytest.mark.parametrize("kind", ["noise", "sweep"])
@pytest.mark.parametrize("a,b", PAIRS)
def test_accuracy(a: int, b: int, kind: str) -> None:
    rs = resampler(a, b)
    x, ideal = _references(kind, a, b, rs)
    y = stream(rs, x[:, None], 480)[:, 0]
    d = rs.latency_out
    assert len(y) == d + len(ideal)
    y = y[d:]
    poly = _precise_poly(x, rs.up, rs.down)
    assert len(poly) == len(y)
    keep = slice(b // 10, len(y) - b // 10)
    e_ideal = db(y[keep] - ideal[keep], ideal[keep])
    e_poly = db(y[keep] - poly[keep], poly[keep])
    assert e_ideal < LIMIT_DB, f"{a}->{b} {kind}: {e_ideal:.1f} dB vs ideal"
    assert e_poly < LIMIT_DB, f"{a}->{b} {kind}: {e_poly:.1f} dB vs resample_poly"
    # the metric has teeth: one output frame of misalignment is far off
    assert db(y[keep][1:] - ideal[keep][:-1], ideal[keep]) > -30
    # and resample_poly with its default filter agrees to its own (lower) precision
    assert db(y[keep] - signal.resample_poly(x.astype(np.float64), rs.up, rs.down)[keep],
              ideal[keep]) < -30


@pytest.mark.parametrize("a,b", [(48000, 16000), (44100, 16000), (22050, 16000)])
def test_alias_rejection(a: int, b: int) -> None:
    """Downsampling: tones between the output Nyquist and the input Nyquist are removed."""
    rs = resampler(a, b)
    t = np.arange(a // 2) / a
    for f in (b / 2 + 50, 1.1 * b / 2, (a + b) / 4, 0.98 * a / 2):
        x = (0.9 * np.sin(2 * np.pi * f * t)).astype(np.float32)
        y = stream(rs, x[:, None], 4096)[:, 0]
        mid = y[b // 10:-b // 10]
        level = 10 * np.log10(np.mean(mid.astype(np.float64) ** 2) / 0.405)
        assert level < -95, f"{a}->{b}: {f:.0f} Hz leaks at {level:.1f} dB"
        rs.reset()


def test_fast_quality() -> None:
    rs = resampler(48000, 16000, quality="fast")
    x, ideal = _references("noise", 48000, 16000, rs)
    # fast is flat to 0.8 x Nyquist only: band-limit the test signal accordingly
    edge = 0.8 * 8000
    x = bandlimited_noise(48000, len(x), edge).astype(np.float32)
    ideal = signal.resample(x.astype(np.float64), len(ideal))
    y = stream(rs, x[:, None], 480)[rs.latency_out:, 0]
    keep = slice(1600, len(y) - 1600)
    assert db(y[keep] - ideal[keep], ideal[keep]) < -70
    assert rs.taps_per_phase < resampler(48000, 16000).taps_per_phase / 2


# -------------------------------------------------------------------------------------------
# node


def test_node_registered() -> None:
    assert node_types()["dsp.resample"] is Resample


@pytest.mark.parametrize("a,b", [(48000, 16000), (44100, 16000), (8000, 16000)])
@pytest.mark.parametrize("block", [1, 480])
def test_node_matches_class(a: int, b: int, block: int) -> None:
    x = np.random.default_rng(4).uniform(-1, 1, (2000 if block == 1 else 9000, 2))
    x = x.astype(np.float32)
    node = Resample("rs", Resample.Params(rate=b))
    run = run_node(node, x, a, block)
    spec = run.specs["audio"]
    assert (spec.sample_rate, spec.channels) == (b, 2)
    want = stream(resampler(a, b, 2), x, 4096)
    assert node.latency_samples == resampler(a, b, 2).latency_out
    assert np.array_equal(run.audio["audio"], want)


def test_node_fast_and_passthrough() -> None:
    x = np.random.default_rng(5).uniform(-1, 1, (3000, 1)).astype(np.float32)
    run = run_node(Resample("rs", Resample.Params(rate=16000, quality="fast")), x, 48000, 160)
    assert np.array_equal(run.audio["audio"], stream(resampler(48000, 16000, 1, "fast"), x, 7))
    node = Resample("same", Resample.Params(rate=16000))
    run = run_node(node, x, 16000, 160)
    assert node.latency_samples == 0
    assert np.array_equal(run.audio["audio"], x)
