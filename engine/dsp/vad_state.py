"""The VAD hysteresis state machine: per-window speech probabilities in, speech segments out.

One machine serves every VAD node (``vad.silero`` feeds it Silero's probabilities, ``vad.webrtc``
its 0/1 frame decisions). It follows the rules of Silero's ``get_speech_timestamps`` (the
parameters have Silero's names and defaults), rewritten so that every decision is taken as soon
as the audio that justifies it has arrived, and so that the result does not depend on how the
audio was cut into blocks:

* a segment opens (as a *candidate*) on the first window with ``p >= threshold``;
* silence starts at the first window with ``p < neg_threshold`` (default ``threshold - 0.15``);
  a window with ``p >= threshold`` cancels it (windows in between neither start nor cancel it);
* the segment ends at the start of that silence on a window with ``p < neg_threshold`` once the
  silence has lasted ``min_silence_ms``;
* a candidate becomes a segment (``start`` is reported) once it is known to be longer than
  ``min_speech_ms``: shorter ones are dropped silently, as Silero drops them after the fact;
* ``speech_pad_ms`` is added on both sides (the node keeps the pre-roll in a ring so the audio
  is there); a padded start never reaches back before the previous padded end;
* a segment longer than ``max_speech_s`` is split at its quietest point: the middle of the longest
  silence of at least ``min_silence_at_max_speech_ms`` inside it (Silero's ``possible_ends``),
  else the middle of the lowest-probability window in its second half. The split is
  *contiguous* (the first part stops where the second starts) so a recogniser reading the gated
  speech audio can slice it at the boundary.

Differences from Silero's offline function, each forced by streaming and documented here:

1. Silero closes a silence only on a window below ``neg_threshold``; a run of windows hovering
   between the two thresholds after a silence started would keep a segment open for as long as it
   lasts, so nothing could be decided (or emitted, or released on the speech port) meanwhile.
   Here, in addition, any window below ``threshold`` closes the silence once it has lasted
   ``min_silence_ms + hover_limit_ms`` (1 s): this bounds decision delay and memory and changes
   nothing unless the probability hovers that long.
2. The padding after a segment is at most ``min_silence_ms`` + one window (the end is emitted
   when it is decided, never in the future); with Silero's defaults (30 ms pad, 100 ms silence)
   this changes nothing.
3. Silero splits the padding between two segments closer than ``2 * speech_pad_ms``; here the
   later start is clamped to the earlier end instead (segments never overlap).
4. ``max_speech_s`` splits are contiguous cuts (see above) rather than Silero's (end, start) pair
   around the silence.

Positions are absolute sample indices on the input clock; each window is identified by the index
of its first sample. Decisions are appended to :attr:`VadStateMachine.boundaries` as
:class:`Boundary` tuples (``("start", padded_start, 0, p, 0)`` and ``("stop", padded_end,
padded_start, 0.0, speech_end)``, ``speech_end`` the end without padding: where the silence began,
the split point, or the end of the stream); the caller drains the list.

Real-time rules: :meth:`step` is pure Python with no allocation beyond small tuples, O(1) per
window (a ``max_speech_s`` split scans at most the second half of the segment, once per split).
Windows are 10-32 ms, so this costs a few microseconds per window.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

IDLE = 0
CANDIDATE = 1
ACTIVE = 2


class Boundary(NamedTuple):
    """One decision: a segment ``"start"`` (``sample`` its padded start, ``probability`` that
    of the window that opened it) or ``"stop"`` (``sample`` its padded end, ``other`` its padded
    start, ``speech_end`` where the speech itself ended)."""

    kind: str
    sample: int
    other: int = 0
    probability: float = 0.0
    speech_end: int = 0


class VadStateMachine:
    """Streaming hysteresis over per-window speech probabilities (see the module docstring)."""

    def __init__(self, sample_rate: int, window: int, threshold: float = 0.5,
                 neg_threshold: float | None = None, min_speech_ms: float = 250,
                 min_silence_ms: float = 100, speech_pad_ms: float = 30,
                 max_speech_s: float = math.inf, min_silence_at_max_speech_ms: float = 98,
                 hover_limit_ms: float = 1000):
        if window <= 0:
            raise ValueError("window must be > 0")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if neg_threshold is None or neg_threshold < 0:
            neg_threshold = max(threshold - 0.15, 0.01)
        if neg_threshold > threshold:
            raise ValueError(f"neg_threshold ({neg_threshold}) must not exceed threshold "
                             f"({threshold})")
        self.sample_rate = int(sample_rate)
        self.window = int(window)
        self.threshold = float(threshold)
        self.neg_threshold = float(neg_threshold)
        ms = self.sample_rate / 1000.0
        self.min_speech = int(round(min_speech_ms * ms))
        self.min_silence = int(round(min_silence_ms * ms))
        self.pad = int(round(speech_pad_ms * ms))
        #: padding after a segment: at most min_silence + one window (difference 2 above)
        self.pad_end = min(self.pad, self.min_silence + self.window)
        self.min_silence_at_max = int(round(min_silence_at_max_speech_ms * ms))
        #: a silence closes on any window below threshold after this long (difference 1 above)
        self.max_silence_pending = self.min_silence + int(round(hover_limit_ms * ms))
        #: the longest time (samples) a decision can wait: history the caller must keep
        self.max_undecided = (self.pad + self.min_speech + self.max_silence_pending
                              + 4 * self.window)
        if math.isfinite(max_speech_s):
            # Silero's definition: the padded segment stays within max_speech_s
            self.max_speech: int | None = max(
                int(self.sample_rate * max_speech_s) - self.window - 2 * self.pad, self.window)
            self._hist = np.zeros(self.max_speech // self.window + 4, np.float32)
        else:
            self.max_speech = None
            self._hist = np.zeros(1, np.float32)
        #: decisions not yet drained by the caller
        self.boundaries: list[Boundary] = []
        #: lifetime counters (not cleared by reset)
        self.segments = 0
        self.splits = 0
        self.reset()

    # ------------------------------------------------------------------------------------------
    def reset(self, origin: int = 0) -> None:
        """Forget everything; the next window is expected at ``origin``."""
        self.origin = int(origin)
        self.state = IDLE
        self.start_raw = 0
        self.start_padded = 0
        self.start_prob = 0.0
        self.temp_end = -1
        self.last_stop = self.origin
        self.next_index = self.origin
        self.possible_ends: list[tuple[int, int]] = []
        self.boundaries.clear()
        self._hist[:] = 1.0

    def frontier(self, input_end: int) -> int:
        """First sample whose speech/non-speech fate is still undecided (the audio gate may
        release everything before it). ``input_end`` is one past the last sample received."""
        if self.state == IDLE:
            f = max(self.next_index - self.pad, self.last_stop)
        elif self.state == CANDIDATE:
            f = self._padded_start(self.start_raw)
        elif self.temp_end >= 0:
            f = self.temp_end + self.pad_end
        else:
            f = self.next_index + self.pad_end
        return min(f, input_end)

    def _padded_start(self, raw: int) -> int:
        return max(raw - self.pad, self.last_stop, self.origin)

    # ------------------------------------------------------------------------------------------
    def step(self, p: float, index: int) -> None:
        """Feed the probability ``p`` of the window starting at absolute sample ``index``."""
        w = self.window
        self.next_index = index + w
        if self.max_speech is not None:
            self._hist[((index - self.origin) // w) % len(self._hist)] = p
        thr = self.threshold
        if self.state == IDLE:
            if p >= thr:
                self.state = CANDIDATE
                self.start_raw = index
                self.start_prob = p
                self.temp_end = -1
                self.possible_ends.clear()
                self._confirm(index + w)
            return
        # a candidate or an open segment
        if p >= thr and self.temp_end >= 0:
            sil = index - self.temp_end
            if sil > self.min_silence_at_max:
                self.possible_ends.append((self.temp_end, sil))
            self.temp_end = -1
        if (self.state == ACTIVE and self.max_speech is not None
                and index - self.start_raw > self.max_speech):
            self._split(index, p)
        if p < thr:
            neg = p < self.neg_threshold
            if neg and self.temp_end < 0:
                self.temp_end = index
            if self.temp_end >= 0:
                sil = index - self.temp_end
                if (neg and sil >= self.min_silence) or sil >= self.max_silence_pending:
                    self._end(self.temp_end + self.pad_end, self.temp_end)
                    return
        if self.state == CANDIDATE:
            self._confirm(self.temp_end if self.temp_end >= 0 else index + w)

    def finish(self, end: int) -> None:
        """End of stream at absolute sample ``end``: close or drop the open segment."""
        if self.state == CANDIDATE:
            self._confirm(self.temp_end if self.temp_end >= 0 else end)
        if self.state == ACTIVE:
            speech_end = end if self.temp_end < 0 else min(self.temp_end, end)
            stop = end if self.temp_end < 0 else min(self.temp_end + self.pad_end, end)
            self._end(max(stop, self.start_padded), max(speech_end, self.start_padded))
        self.state = IDLE
        self.temp_end = -1

    def cut(self, at: int) -> None:
        """Close the open segment at ``at`` (used on a stream discontinuity); drop a candidate."""
        if self.state == ACTIVE:
            self._end(max(at, self.start_padded), max(at, self.start_padded))
        self.state = IDLE
        self.temp_end = -1

    # ------------------------------------------------------------------------------------------
    def _confirm(self, lower_end: int) -> None:
        if lower_end - self.start_raw > self.min_speech:
            self.state = ACTIVE
            self.start_padded = self._padded_start(self.start_raw)
            self.segments += 1
            self.boundaries.append(Boundary("start", self.start_padded, 0, self.start_prob))

    def _end(self, stop: int, speech_end: int) -> None:
        if self.state == ACTIVE:
            self.boundaries.append(Boundary("stop", stop, self.start_padded,
                                            speech_end=min(speech_end, stop)))
            self.last_stop = stop
        self.state = IDLE
        self.temp_end = -1
        self.possible_ends.clear()

    def _split(self, index: int, p: float) -> None:
        """Cut the open segment at its quietest point (contiguous: stop == next start)."""
        w = self.window
        if self.possible_ends:
            best_end, best_dur = self.possible_ends[0]
            for e, d in self.possible_ends:
                if d > best_dur:
                    best_end, best_dur = e, d
            cut = best_end + best_dur // 2
        else:
            # the lowest-probability window in the second half of the segment
            k_lo = (self.start_raw + (index - self.start_raw) // 2 - self.origin) // w
            k_hi = (index - self.origin) // w  # the current window, excluded
            n = len(self._hist)
            best_k, best_p = k_hi - 1, math.inf
            for k in range(max(k_lo, k_hi - n + 1), k_hi):
                v = self._hist[k % n]
                if v < best_p:
                    best_k, best_p = k, v
            cut = self.origin + best_k * w + w // 2
        cut = max(cut, self.start_padded + 1)
        self.boundaries.append(Boundary("stop", cut, self.start_padded, speech_end=cut))
        self.start_raw = cut
        self.start_padded = cut
        self.last_stop = cut
        self.start_prob = p
        self.possible_ends.clear()
        if self.temp_end >= 0 and self.temp_end < cut:
            self.temp_end = -1
        self.segments += 1
        self.splits += 1
        self.boundaries.append(Boundary("start", cut, 0, p))


def silero_timestamps(probs, sample_rate: int, n_samples: int, threshold: float = 0.5,
                      neg_threshold: float | None = None, min_speech_ms: float = 250,
                      min_silence_ms: float = 100, speech_pad_ms: float = 30,
                      max_speech_s: float = math.inf,
                      min_silence_at_max_speech_ms: float = 98) -> list[tuple[int, int]]:
    """Silero's offline ``get_speech_timestamps`` (silero-vad 6.x) on given window probabilities.

    A port of the segmentation part of ``silero_vad.utils_vad.get_speech_timestamps`` (MIT):
    ``probs[i]`` is the probability of the window starting at ``i * window``; returns padded
    ``(start, end)`` sample pairs. Offline and not real-time: it is the *reference* the streaming
    :class:`VadStateMachine` is checked against (tests, ``tools/bench/bench_vad.py``).
    """
    w = 512 if sample_rate == 16000 else 256
    min_speech = sample_rate * min_speech_ms / 1000
    pad = sample_rate * speech_pad_ms / 1000
    max_speech = sample_rate * max_speech_s - w - 2 * pad
    min_silence = sample_rate * min_silence_ms / 1000
    min_sil_max = sample_rate * min_silence_at_max_speech_ms / 1000
    if neg_threshold is None or neg_threshold < 0:
        neg_threshold = max(threshold - 0.15, 0.01)
    triggered = False
    speeches: list[dict[str, float]] = []
    cur: dict[str, float] = {}
    temp_end = prev_end = next_start = 0
    possible_ends: list[tuple[int, int]] = []
    for i, p in enumerate(probs):
        s = w * i
        if p >= threshold and temp_end:
            sil = s - temp_end
            if sil > min_sil_max:
                possible_ends.append((temp_end, sil))
            temp_end = 0
            if next_start < prev_end:
                next_start = s
        if p >= threshold and not triggered:
            triggered = True
            cur["start"] = s
            continue
        if triggered and s - cur["start"] > max_speech:
            if possible_ends:
                prev_end, dur = max(possible_ends, key=lambda x: x[1])
                cur["end"] = prev_end
                speeches.append(cur)
                cur = {}
                next_start = prev_end + dur
                if next_start < prev_end + s:
                    cur["start"] = next_start
                else:
                    triggered = False
                possible_ends = [e for e in possible_ends if e[0] > next_start]
                prev_end = next_start = temp_end = 0
            else:
                cur["end"] = s
                speeches.append(cur)
                cur = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                possible_ends = []
                continue
        if p < neg_threshold and triggered:
            if not temp_end:
                temp_end = s
            if s - temp_end < min_silence:
                continue
            cur["end"] = temp_end
            if cur["end"] - cur["start"] > min_speech:
                speeches.append(cur)
            cur = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            possible_ends = []
            continue
    if cur and n_samples - cur["start"] > min_speech:
        cur["end"] = n_samples
        speeches.append(cur)
    for i, sp in enumerate(speeches):
        if i == 0:
            sp["start"] = int(max(0, sp["start"] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1]["start"] - sp["end"]
            if gap < 2 * pad:
                sp["end"] += int(gap // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
            else:
                sp["end"] = int(min(n_samples, sp["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            sp["end"] = int(min(n_samples, sp["end"] + pad))
    return [(int(sp["start"]), int(sp["end"])) for sp in speeches]
