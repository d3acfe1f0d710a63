"""Sound-event decisions: per-patch YAMNet class scores in, started / stopped events out.

Pure Python and NumPy, shared by the ``sound.yamnet`` node (:mod:`engine.nodes.sound_events`),
its offline reference pass and the benchmark. Each *group* (``alarm``, ``dog``, ...) scores the
maximum over its AudioSet classes; :class:`EventDecider` turns group scores into decisions:

* smoothing over the last ``smoothing_patches`` patches (``mean`` or ``max`` for both decisions;
  ``none``; default ``hold``: an event opens on the raw score of one patch, so an onset is not
  delayed, and stays open while the mean over the last 3 patches is at least *off*, so a one-patch
  dip inside a sound does not split it);
* hysteresis: an event opens when the score reaches the group's *on* threshold and stays
  open while it is at least the *off* threshold; backwards too: its start moves back over the
  preceding patches (up to ``lookback_s``) that already scored at least *off*;
* ``min_duration_s``: ``SoundEventStarted`` is emitted once the event has lasted that long (it is
  still stamped at the event's start); shorter blips are dropped;
* ``cooldown_s``: after an event of a group stops, that group cannot start a new one for this long.

Timing on the audio clock: patch ``p`` covers samples ``[p H, p H + 15600)`` (``H`` the patch
hop, default 0.24 s). The patch grid alone says only that the sound is somewhere in a 0.96 s
patch: when a group turns on at patch ``p`` while patch ``p - 1`` stayed off, the grid stamp is
``p H + 15600 - H`` (the part of patch ``p`` that patch ``p - 1`` did not contain), but YAMNet
often needs a good part of a patch filled before it scores a sound, so that stamp is up to a patch
late. **Onset localisation** (``onset_search_s`` > 0, the default) therefore stamps the start
where the sound begins in the audio: in the log-mel frames of the patch (kept in a small ring),
the 16 mel bands in which the triggering sound stands out from the preceding background give its
level envelope, and the largest rise of at least ``onset_rise_db`` in the search window (from
``onset_search_s`` before the starting patch to the end of the triggering one) is the onset,
exact to the 10 ms frame (see :meth:`EventDecider._localise`). With no clear rise the grid stamp
stays. An event whose last active patch is ``q - 1`` stops at ``q H`` (the end of the first hop
of patch ``q - 1``, the part patch ``q`` no longer contains), and at least one hop after its
start. A smoothing window of ``k`` patches is credited to its middle patch (for ``hold``, only
in the stop). ``SoundScores`` are stamped at the patch centre. Stamps are stream samples (0 =
the first sample fed); none depends on the block size. A start is emitted when the patch that
decides it is complete, ``H`` = 0.24 s after the grid stamp (more with look-back, smoothing or a
minimum duration), plus the model time (well under 1 ms per patch on one core): the localised
stamp lies up to ``0.96 s + onset_search_s`` before that moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .yamnet_features import HOP, NMELS, PATCH_FRAMES, PATCH_SAMPLES, SAMPLE_RATE, WINDOW

# onset localisation constants (see EventDecider._localise); chosen on the benchmark's insertions
ONSET_BANDS = 16  # mel bands (of 64) in which the triggering sound stands out most
ONSET_BG_FRAMES = 30  # 0.3 s of preceding level a rise is measured against (median)
ONSET_PROFILE_FRAMES = 50  # 0.5 s before the search window: the background's spectrum
ONSET_SMOOTH_FRAMES = 3  # level of a candidate frame: mean of it and the next two
ONSET_NEAR_MAX_DB = 10.0  # a candidate's level is within this of the window's loudest
ONSET_TIE_DB = 1.0  # rises this close to the largest count as equal: the earliest wins


@dataclass
class _GroupState:
    active: bool = False  # above threshold (confirmed or not)
    confirmed: bool = False  # SoundEventStarted emitted
    start: int = 0  # stream sample of the run's start
    patches: int = 0
    max_score: float = 0.0
    last_stop: int = -(1 << 62)
    #: top classes of the patch that opened the run (reported when min_duration confirms it)
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Decision:
    """One decision of :class:`EventDecider`: ``kind`` is ``"started"`` or ``"stopped"``."""

    kind: str
    group: str
    sample: int  # stream sample (0 = first sample fed)
    score: float  # smoothed score at start / maximum over the event at stop
    start_sample: int = 0
    top_classes: tuple[tuple[str, float], ...] = ()


class EventDecider:
    """Group scores per patch -> started / stopped decisions (smoothing, hysteresis, minimum
    duration, cooldown, onset localisation). Times are stream samples; see the module docstring
    for the timing.

    ``update(p, scores, patch)`` takes patch ``p``'s class scores and, for onset localisation,
    its ``(96, 64)`` log-mel patch (without it, starts use the patch-grid rule)."""

    def __init__(self, groups: dict[str, list[int]], class_names: list[str],
                 thresholds: dict[str, tuple[float, float]], hop_samples: int,
                 smoothing: str = "mean", smoothing_patches: int = 1,
                 min_duration_s: float = 0.0, cooldown_s: float = 0.0,
                 lookback_s: float = 0.0, sample_rate: int = SAMPLE_RATE, top_k: int = 3,
                 onset_search_s: float = 0.0, onset_rise_db: float = 10.0):
        self.names = list(groups)
        self.class_names = class_names
        self.hop = int(hop_samples)
        if self.hop % HOP or not 0 < self.hop <= PATCH_FRAMES * HOP:
            raise ValueError(f"hop_samples must be a multiple of {HOP} up to one patch")
        self.hop_frames = self.hop // HOP
        self.on = np.array([thresholds[g][0] for g in self.names], np.float32)
        self.off = np.array([thresholds[g][1] for g in self.names], np.float32)
        self.k = 1 if smoothing == "none" else max(1, int(smoothing_patches))
        self.smoothing = "none" if self.k == 1 else smoothing
        self.min_patches = max(1, math.ceil(min_duration_s * sample_rate / self.hop - 1e-9))
        self.cooldown = int(round(cooldown_s * sample_rate))
        self.lookback = max(0, int(math.floor(lookback_s * sample_rate / self.hop + 1e-9)))
        self.top_k = top_k
        # flat class index list + segment offsets for np.maximum.reduceat
        self._members = [np.asarray(groups[g], np.int64) for g in self.names]
        self._flat = np.concatenate(self._members) if self._members else np.zeros(0, np.int64)
        self._offsets = np.cumsum([0] + [len(m) for m in self._members[:-1]]).astype(np.int64)
        self._vals = np.zeros(len(self._flat), np.float32)
        self.raw = np.zeros(len(self.names), np.float32)
        self.smoothed = np.zeros(len(self.names), np.float32)
        self._hist = np.zeros((self.k, len(self.names)), np.float32)
        # smoothed scores of the last `lookback` patches, for back-dating a start
        self._past = np.zeros((self.lookback + 1, len(self.names)), np.float32)
        # a smoothing window of k patches is credited to its middle patch; with "hold" only the
        # off-decision is smoothed, so only stops are
        half = (self.k - 1) / 2.0 * self.hop
        self._shift = 0.0 if self.smoothing == "hold" else half
        self._stop_shift = half
        # onset localisation: a ring of the latest log-mel frames (absolute frame f at row
        # f % len), long enough for the search window, its background and any look-back
        self.onset_frames = max(0, int(round(onset_search_s * sample_rate / HOP)))
        self.onset_rise_db = float(onset_rise_db)
        cap = (PATCH_FRAMES + self.onset_frames + ONSET_PROFILE_FRAMES + ONSET_BG_FRAMES
               + self.lookback * self.hop_frames + self.hop_frames + 8)
        self._frames = np.zeros((cap if self.onset_frames else 1, NMELS), np.float32)
        self.reset()

    def reset(self) -> None:
        self._hist[:] = 0.0
        self._past[:] = 0.0
        self._n = 0
        self._frames_done = 0  # absolute index of the next log-mel frame to store
        self.state = [_GroupState() for _ in self.names]

    def start_sample(self, p: int) -> int:
        """Start stamp of an event first seen in patch ``p``: where the audio that patch ``p - 1``
        did not contain begins (``p H + 15600 - H``)."""
        return max(0, int(round(p * self.hop + PATCH_SAMPLES - self.hop - self._shift)))

    def stop_sample(self, q: int, start: int) -> int:
        """Stop stamp of an event whose last patch is ``q - 1``: where the audio that patch ``q``
        no longer contains ends (``q H``); at least one hop after the start."""
        return max(start + self.hop, int(round(q * self.hop - self._stop_shift)))

    def centre_sample(self, p: int) -> int:
        """The centre of patch ``p`` (the stamp of its SoundScores)."""
        return max(0, int(round(p * self.hop + PATCH_SAMPLES / 2 - self._shift)))

    def group_scores(self, scores: np.ndarray) -> np.ndarray:
        """Each group's score (max over its classes), smoothed; updates ``raw``/``smoothed``."""
        if len(self._flat):
            np.take(scores, self._flat, out=self._vals)
            np.maximum.reduceat(self._vals, self._offsets, out=self.raw)
        self._hist[self._n % self.k] = self.raw
        self._n += 1
        rows = self._hist[: min(self._n, self.k)]
        if self.smoothing == "max":
            np.max(rows, axis=0, out=self.smoothed)
        elif self.smoothing in ("mean", "hold"):
            np.mean(rows, axis=0, out=self.smoothed)
        else:
            self.smoothed[:] = self.raw
        return self.smoothed

    def _top(self, gi: int, scores: np.ndarray) -> tuple[tuple[str, float], ...]:
        m = self._members[gi]
        order = np.argsort(-scores[m], kind="stable")[: self.top_k]
        return tuple((self.class_names[int(m[i])], round(float(scores[m[i]]), 4)) for i in order)

    def _store_frames(self, p: int, patch: np.ndarray) -> None:
        """Keep the frames of patch ``p`` not stored yet (its last hop; all of patch 0)."""
        first = p * self.hop_frames  # absolute frame of patch row 0
        cap = len(self._frames)
        f = max(self._frames_done, first, first + PATCH_FRAMES - cap)
        while f < first + PATCH_FRAMES:  # at most two slice copies (the ring wraps once)
            r = f % cap
            n = min(first + PATCH_FRAMES - f, cap - r)
            self._frames[r:r + n] = patch[f - first:f - first + n]
            f += n
        self._frames_done = max(self._frames_done, first + PATCH_FRAMES)

    def update(self, p: int, scores: np.ndarray, patch: np.ndarray | None = None
               ) -> list[Decision]:
        """Feed patch ``p``'s class scores (and its log-mel patch); return the decisions."""
        if self.onset_frames and patch is not None:
            self._store_frames(p, patch)
        s = self.group_scores(scores)
        on_vals = self.raw if self.smoothing == "hold" else s
        out: list[Decision] = []
        t = self.start_sample(p)
        for gi, g in enumerate(self.names):
            st = self.state[gi]
            v = float(s[gi])
            if st.active:
                if v >= self.off[gi]:
                    # min_duration counts patches where the sound itself scores (with 'hold',
                    # the raw score: the held tail of one loud patch is not a longer sound)
                    if float(on_vals[gi]) >= self.off[gi]:
                        st.patches += 1
                    st.max_score = max(st.max_score, v)
                    if not st.confirmed and st.patches >= self.min_patches:
                        st.confirmed = True
                        out.append(Decision("started", g, st.start, st.max_score,
                                            top_classes=st.top))
                    continue
                self._stop(gi, self.stop_sample(p, st.start), out)
            v_on = float(on_vals[gi])
            if v_on >= self.on[gi] and t - st.last_stop >= self.cooldown:
                j = self._backdate(p, gi, st)
                t0 = self.start_sample(j)
                if self.onset_frames and patch is not None:
                    t0 = self._localise(p, j, t0, st)
                st.active, st.confirmed = True, False
                st.start, st.patches, st.max_score = t0, 1, v_on
                st.top = self._top(gi, scores)
                if self.min_patches <= 1:
                    st.confirmed = True
                    out.append(Decision("started", g, t0, v_on, top_classes=st.top))
        self._past[p % len(self._past)] = s
        return out

    def _backdate(self, p: int, gi: int, st: _GroupState) -> int:
        """Hysteresis backwards: the patch that starts an event turning on at patch ``p``,
        moved back over the preceding patches (at most ``lookback``) whose score was already
        >= off, never before the previous event's stop plus the cooldown."""
        j = p
        while j - 1 >= max(0, p - self.lookback) \
                and self._past[(j - 1) % len(self._past)][gi] >= self.off[gi] \
                and self.start_sample(j - 1) - st.last_stop >= self.cooldown:
            j -= 1
        return j

    def _localise(self, p: int, j: int, grid_start: int, st: _GroupState) -> int:
        """Stamp an event triggered by patch ``p`` (started by patch ``j <= p``, see
        :meth:`_backdate`) at the onset of the sound in the audio.

        The patch-grid stamp (``grid_start``) only says the sound is somewhere in the 0.96 s
        patch. Here the 16 mel bands in which the loud frames of patch ``p`` exceed the
        background most (the median spectrum of the 0.5 s before the search window) give a
        level envelope of that sound; candidate frames lie in the search window, from
        ``onset_search_s`` before the patch that starts the event to the end of patch ``p``.
        A candidate's rise is its level (mean of 3 frames from it) minus the median level of the
        0.3 s before it; among candidates that rise at least ``onset_rise_db`` and come within
        10 dB of the window's loudest, the largest rise wins, and of rises within 1 dB of it the
        earliest (on a steady sound every frame of the first 0.15 s rises about as much). Its
        10 ms frame ``f`` stamps the event at ``160 f + 240``, the first sample that frame ``f``
        (``[160 f, 160 f + 400)``) adds to frame ``f - 1``. No such rise (a sound creeping up,
        or the start of the stream): the grid stamp stays. Runs once per event start."""
        hf = self.hop_frames
        end = p * hf + PATCH_FRAMES  # one past the last frame of patch p
        fa = j * hf - self.onset_frames
        if st.last_stop > -(1 << 61):  # not before the previous event's stop + cooldown
            fa = max(fa, -(-(st.last_stop + self.cooldown - (WINDOW - HOP)) // HOP))
        lo = fa - max(ONSET_PROFILE_FRAMES, ONSET_BG_FRAMES)
        cap = len(self._frames)
        if lo < 0 or lo < end - cap or fa >= end:
            return grid_start
        rows = np.arange(lo, end) % cap
        w = self._frames[rows].astype(np.float64)  # (frames, 64), per-event allocation only
        n_pre = fa - lo
        background = np.median(w[n_pre - ONSET_PROFILE_FRAMES: n_pre], axis=0)
        patch = w[len(w) - PATCH_FRAMES:]
        loud = np.log(np.exp(patch).sum(axis=1))
        profile = patch[loud >= np.percentile(loud, 70)].mean(axis=0)
        bands = np.argsort(background - profile, kind="stable")[:ONSET_BANDS]
        level = (20.0 / np.log(10.0)) * np.log(np.exp(w[:, bands]).sum(axis=1))
        # candidate i (frame lo + i, i >= n_pre): forward mean of 3 frames vs median of 30 before
        k = ONSET_SMOOTH_FRAMES
        c = np.concatenate(([0.0], np.cumsum(level)))
        idx = np.arange(n_pre, len(level))
        hi = np.minimum(idx + k, len(level))
        lev = (c[hi] - c[idx]) / (hi - idx)
        past = np.lib.stride_tricks.sliding_window_view(level, ONSET_BG_FRAMES)
        base = np.median(past[idx - ONSET_BG_FRAMES], axis=1)
        rise = lev - base
        ok = (rise >= self.onset_rise_db) & (lev >= lev.max() - ONSET_NEAR_MAX_DB)
        if not ok.any():
            return grid_start
        rise = np.where(ok, rise, -np.inf)
        best = int(np.argmax(rise >= rise.max() - ONSET_TIE_DB))
        return max(0, (lo + n_pre + best) * HOP + WINDOW - HOP)

    def _stop(self, gi: int, t: int, out: list[Decision]) -> None:
        st = self.state[gi]
        if st.confirmed:
            out.append(Decision("stopped", self.names[gi], t, st.max_score, start_sample=st.start))
            st.last_stop = t
        st.active = st.confirmed = False

    def finish(self, last_patch: int, end_sample: int | None = None) -> list[Decision]:
        """End of stream: events still open stop at ``end_sample`` (the last sample fed; the
        sound was still present in the last patch), else at the end of the last patch."""
        out: list[Decision] = []
        end = last_patch * self.hop + PATCH_SAMPLES if end_sample is None else end_sample
        for gi, st in enumerate(self.state):
            if st.active:
                self._stop(gi, max(end, st.start), out)
        return out
