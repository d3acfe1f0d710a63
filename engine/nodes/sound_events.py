"""``sound.yamnet``: sound-event monitoring with YAMNet (AudioSet, 521 classes).

Pipeline per input block (16 kHz mono): YAMNet's own log-mel front end
(:mod:`engine.dsp.yamnet_features`, a ``nogil`` Numba kernel) cuts 0.96 s patches every
``patch_hop_s``; each patch goes through :class:`engine.models.yamnet.YamnetModel` (onnxruntime,
one thread) to 521 class probabilities; each *group* (``alarm``, ``dog``, ...) scores the maximum
over its AudioSet classes; an :class:`~engine.dsp.sound_event_logic.EventDecider` turns group
scores into events (smoothing, hysteresis both ways, minimum duration, cooldown, onset
localisation: :mod:`engine.dsp.sound_event_logic` states the rules and the timing on the audio
clock, patch hop ``patch_hop_s`` default 0.24 s). All stamps
are absolute input sample indices (``io.start["audio"]`` plus the offset in the stream; quanta
dropped upstream are bridged without shifting the clock), and none depends on the block size.

The default model is quantised (uint8): its output is a code, logit = scale x (code - zero
point), 0.7565 x (code - 190) as read from the model, so a score takes only the values
0.094, 0.18, 0.319, 0.5, 0.681, 0.82, 0.906, 0.954 near the thresholds
(:meth:`~engine.models.yamnet.YamnetModel.score_steps`) and a threshold compared with one
patch's score acts as the lowest step at or above it: *on* 0.5 means "quantised logit >= 0"
(a float logit >= -0.38, probability >= about 0.41), 0.55 acts as 0.681, 0.32 as 0.5. A
threshold set in the graph strictly between two steps is warned about at load time, with the
step it acts as (:func:`thresholds_between_steps`); a float YAMNet has no steps. *off* (0.3) is
compared with the 3-patch moving mean under the default ``hold`` smoothing, which does fall
between steps. ``DEFAULT_THRESHOLDS`` sets per-group exceptions (``dog``: 0.3 / 0.15, on one
step lower: 0.3 acts as 0.319; fitted on the benchmark's clips; see there); ``thresholds``
overrides them, ``default_thresholds = false`` drops them.

Outputs: ``events`` (``SoundEventStarted`` / ``SoundEventStopped``, and ``NodeError`` for
non-fatal evidence / webhook failures) and ``scores`` (``SoundScores`` per patch when
``emit_scores``: each group's smoothed score under the group's name, then the ``scores_top_k``
highest classes under their AudioSet names).

Side outputs, both on background threads behind bounded queues so ``process`` never waits on I/O:

* ``evidence_dir``: each event's audio, from ``pre_roll_s`` before its start to the moment it is
  stopped (at most ``max_clip_s``), written as a 16-bit WAV plus a JSON sidecar. A folder
  that cannot be created or written is a graph error (``nodes[ID].params.evidence_dir: ...``,
  checked when the graph is loaded); one that fails later (a full disk, the folder removed)
  makes each clip that fails an ``engine.node_error`` event and a log warning, never a crash;
  a clip that finds the writer's queue (32 clips) full is dropped, counted and reported.
  ``evidence_max_mb`` caps the folder: the oldest clips of this node are deleted to make room
  (counted in ``clips_pruned``), so a monitor left running for weeks does not fill the disk.
* ``webhook_url``: the JSON of every started / stopped event is POSTed (``urllib``) with a
  timeout of ``webhook_timeout_s`` and up to ``webhook_retries`` retries with exponential backoff;
  failures are counted and reported like evidence failures. When the endpoint falls 256 posts
  behind (down, or slower than the events), the **oldest** queued post is dropped (the newest
  alerts matter most), counted in ``webhook_dropped`` and reported (at the 1st, 10th, 100th...).

Every post ends in exactly one of ``webhook_posted``, ``webhook_failed``, ``webhook_dropped`` or
``webhook_undelivered_at_end`` (still queued when the stream ended and the end-of-stream wait
ran out; a job in progress then is let finish and counted by its outcome); clips likewise in
``clips_written``, ``clips_failed``, ``clips_dropped`` or ``clips_unsaved_at_end``.

Real-time rules: this is a ``thread = "worker"`` node (it runs a model). ``process`` accepts any
block length; its work is the feature kernel, one model call per completed patch and a few small
NumPy operations on preallocated arrays (the onset ring takes each patch's new frames by slice
copy). Per event, not per block: the onset search (NumPy on about 2 s of log-mel frames, well
under a millisecond) and the evidence clip copy.
Output does not depend on the block size.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..dsp.sound_event_logic import Decision, EventDecider
from ..dsp.yamnet_features import HOP, PATCH_SAMPLES, SAMPLE_RATE, YamnetFeatures
from ..errors import EngineError, ModelError, NegotiationError
from ..events import Event, NodeError, SoundEventStarted, SoundEventStopped, SoundScores
from ..models.manifest import model_file, model_folder
from ..models.yamnet import NUM_CLASSES, PATCH_SHAPE, YamnetModel, load_class_map
from ..node import (
    AUDIO,
    EVENTS,
    AudioSpec,
    Node,
    NodeIO,
    did_you_mean,
    param,
    register,
    require_mono,
    require_rate,
    unwritable_dir,
)
from ..ring import HistoryRing
from ._background import BackgroundJobs

log = logging.getLogger(__name__)

#: default groups: sounds worth an alert in a home / office, none of them speech
DEFAULT_GROUPS: dict[str, list[str]] = {
    "alarm": ["Smoke detector, smoke alarm", "Fire alarm", "Siren", "Civil defense siren",
              "Alarm clock", "Car alarm", "Police car (siren)", "Ambulance (siren)",
              "Fire engine, fire truck (siren)"],
    "glass": ["Glass", "Shatter", "Breaking", "Chink, clink"],
    "dog": ["Dog", "Bark", "Bow-wow", "Yip", "Howl", "Growling", "Whimper (dog)"],
    "baby": ["Baby cry, infant cry"],
    "cat": ["Cat", "Meow", "Caterwaul"],
    "doorbell": ["Doorbell", "Ding-dong"],
    "knock": ["Knock"],
    "gunshot": ["Gunshot, gunfire", "Machine gun", "Cap gun", "Fusillade"],
    "explosion": ["Explosion", "Boom"],
    "scream": ["Screaming"],
}


# ---------------------------------------------------------------------------------------------
# defaults of the decision logic (engine.dsp.sound_event_logic)

#: per-group [on, off] thresholds that replace ``on_threshold`` / ``off_threshold`` by default.
#: Fitted on the benchmark's labelled clips and background (tools/bench/bench_sound_events.py):
#: the quiet dog recordings peak one quantisation step below 0.5 (at 0.32), and 'dog' at 0.3 / 0.15
#: raised no false alarm on the 10 minutes of speech / noise background (three seeds).
DEFAULT_THRESHOLDS: dict[str, list[float]] = {"dog": [0.3, 0.15]}

#: the default (quantised) model's scores around the thresholds, rounded: the sigmoid of
#: scale x (code - zero point), 0.7565 x (code - 190) as read from the model by
#: YamnetModel.score_steps (the node warns about a threshold between two of them; a float
#: model has no steps). tests/test_sound_events.py checks them against the model.
STEPS_DOC = "... 0.094, 0.18, 0.319, 0.5, 0.681, 0.82, 0.906, 0.954 ..."

#: webhook posts waiting for the endpoint before the oldest is dropped
WEBHOOK_QUEUE = 256


# ---------------------------------------------------------------------------------------------
# the node


def _resolve_model(params: Any) -> tuple[Path, Path]:
    m = str(params.model)
    if m.endswith(".onnx") or "/" in m or "\\" in m:
        mp = Path(m).expanduser()
        if not mp.exists():
            raise ModelError(f"YAMNet model file {mp} does not exist")
    else:
        mp = model_folder(m) / "model.onnx"  # verifies every file of the manifest entry
    if params.class_map:
        cm = Path(params.class_map).expanduser()
    elif (mp.parent / "yamnet_class_map.csv").exists():
        cm = mp.parent / "yamnet_class_map.csv"
    else:
        cm = model_file("yamnet", "yamnet_class_map.csv")
    return mp, cm


def _class_map_for(params: Any) -> list[str]:
    if params.class_map:
        return load_class_map(Path(params.class_map).expanduser())
    try:
        return load_class_map(_resolve_model(params)[1])
    except ModelError:
        return load_class_map(model_file("yamnet", "yamnet_class_map.csv", verify=False))


@register
class SoundEvents(Node):
    """Detect groups of AudioSet sounds (alarms, glass, dogs, babies, ...) in 16 kHz mono audio."""

    type_name = "sound.yamnet"
    inputs = {"audio": AUDIO}
    outputs = {"events": EVENTS, "scores": EVENTS}
    thread = "worker"

    @dataclass(frozen=True)
    class Params:
        model: str = param("yamnet", doc="manifest model name, or the path of a YAMNet .onnx "
                                         "(uint8 quantised or float32 input [1, 1, 96, 64])")
        class_map: str = param("", doc="yamnet_class_map.csv; default: the one beside the model")
        patch_hop_s: float = param(0.24, ge=0.01, le=0.96,
                                   doc="seconds between 0.96 s patches (rounded to 10 ms)")
        groups: dict = param(DEFAULT_GROUPS,
                             doc="group name -> list of AudioSet class names (display names "
                                 "of yamnet_class_map.csv); a group scores the max of its "
                                 "classes. Setting it replaces the default groups")
        extra_groups: dict = param({}, doc="groups added to `groups` (the defaults unless "
                                           "replaced), e.g. { kettle = [\"Whistle\"] }")
        on_threshold: float = param(
            0.5, gt=0.0, le=1.0,
            doc="score that opens an event. The default model is quantised: a score is one "
                "of the steps " + STEPS_DOC + ", so a threshold acts as the lowest step at or "
                "above it (0.5: quantised logit >= 0, a float model's probability >= about "
                "0.41; 0.55 acts as 0.681; one between steps is warned about at load)")
        off_threshold: float = param(
            0.3, ge=0.0, le=1.0,
            doc="score below which it closes; with smoothing 'hold' / 'mean' compared with "
                "the moving mean of smoothing_patches scores (between the steps), with "
                "'max' / 'none' with one score, where it acts as a step (0.3 as 0.319)")
        thresholds: dict = param({}, doc="per-group [on, off] overriding the two above (and "
                                         "the built-in per-group defaults); the same steps "
                                         "apply")
        default_thresholds: bool = param(True, doc="apply the built-in per-group thresholds "
                                                   "(DEFAULT_THRESHOLDS: dog 0.3 / 0.15)")
        min_duration_s: float = param(0.0, ge=0.0, le=60.0,
                                      doc="an event is reported once it lasted this long")
        smoothing: str = param("hold", choices=("none", "mean", "max", "hold"),
                               doc="moving mean or max of group scores over smoothing_patches "
                                   "for both decisions; 'hold': an event opens on the raw "
                                   "score and stays open while the moving mean is >= off")
        smoothing_patches: int = param(3, ge=1, le=20,
                                       doc="smoothing window in patches (unless smoothing "
                                           "= 'none')")
        cooldown_s: float = param(2.0, ge=0.0, le=3600.0,
                                  doc="quiet time per group after an event before the next")
        lookback_s: float = param(0.0, ge=0.0, le=10.0,
                                  doc="an event's start moves back over preceding patches that "
                                      "already scored >= off, up to this long")
        onset_search_s: float = param(1.5, ge=0.0, le=5.0,
                                      doc="stamp a start at the sound's onset in the audio, "
                                          "searched from this long before the patch that "
                                          "starts the event to the end of the one that "
                                          "triggers it; 0 = the patch-grid stamp")
        onset_rise_db: float = param(10.0, gt=0.0, le=60.0,
                                     doc="least level rise (dB, in the sound's own mel bands) "
                                         "that counts as its onset")
        emit_scores: bool = param(False, doc="emit SoundScores on the scores port per patch")
        scores_top_k: int = param(5, ge=0, le=NUM_CLASSES,
                                  doc="classes listed in each SoundScores")
        evidence_dir: str = param("", doc="folder for a WAV clip (+ JSON) per event; '' = off. "
                                          "Created if missing; one that cannot be created or "
                                          "written is a graph error")
        pre_roll_s: float = param(2.0, ge=0.0, le=60.0, doc="audio kept before an event's start")
        max_clip_s: float = param(30.0, gt=0.0, le=600.0, doc="longest evidence clip")
        evidence_max_mb: float = param(2048.0, ge=0.0, doc="most MB of this node's clips kept in "
                                                          "evidence_dir (oldest deleted); 0 = "
                                                          "no limit")
        webhook_url: str = param("", doc="http(s) URL to POST each event's JSON to; '' = off")
        webhook_timeout_s: float = param(2.0, gt=0.0, le=60.0, doc="per attempt")
        webhook_retries: int = param(2, ge=0, le=10, doc="retries after a failed POST")
        threads: int = param(1, ge=1, le=16, doc="onnxruntime intra-op threads")

    # ------------------------------------------------------------------ validation
    @classmethod
    def validate_params(cls, params: Any, class_names: list[str] | None = None) -> list[str]:
        """Every problem of ``params`` beyond types and ranges, each prefixed with its path
        inside ``params`` (``groups.alarm: unknown AudioSet class 'Sirne' (did you mean
        'Siren'?)``). Loads only the class map, never the model."""
        problems: list[str] = []
        if not isinstance(params.extra_groups, dict):
            problems.append("extra_groups: must be a table of group = [AudioSet class names]")
        groups = all_groups(params) if isinstance(params.groups, dict) else params.groups
        if class_names is None:
            try:
                class_names = _class_map_for(params)
            except EngineError as e:
                problems.append(f"class_map: {e}")
        known = set(class_names or ())
        if not isinstance(groups, dict) or not groups:
            problems.append("groups: must be a table of group = [AudioSet class names]")
            groups = {}
        extra = params.extra_groups if isinstance(params.extra_groups, dict) else {}
        for g, names in groups.items():
            where = f"{'extra_groups' if g in extra else 'groups'}.{g}"
            if not isinstance(names, (list, tuple)) or not names \
                    or not all(isinstance(n, str) for n in names):
                problems.append(f"{where}: must be a non-empty list of AudioSet class names")
                continue
            if class_names is None:
                continue
            for n in names:
                if n not in known:
                    problems.append(f"{where}: unknown AudioSet class '{n}'"
                                    f"{_class_hint(n, class_names)}")
        if params.off_threshold > params.on_threshold:
            problems.append(f"off_threshold: must be <= on_threshold ({params.on_threshold}), "
                            f"got {params.off_threshold}")
        th = params.thresholds if isinstance(params.thresholds, dict) else {}
        if not isinstance(params.thresholds, dict):
            problems.append("thresholds: must be a table of group = [on, off]")
        for g, v in th.items():
            if g not in groups:
                problems.append(f"thresholds.{g}: no such group{did_you_mean(g, groups)} "
                                f"(groups: {', '.join(groups)})")
                continue
            ok = (isinstance(v, (list, tuple)) and len(v) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
            if not ok or not (0.0 <= v[1] <= v[0] <= 1.0) or v[0] <= 0.0:
                problems.append(f"thresholds.{g}: must be [on, off] with 0 <= off <= on <= 1 "
                                f"and on > 0, got {v!r}")
        if params.webhook_url:
            u = urlparse(params.webhook_url)
            if u.scheme not in ("http", "https") or not u.netloc:
                problems.append(f"webhook_url: must be an http:// or https:// URL, got "
                                f"{params.webhook_url!r}")
        if params.evidence_dir:  # refused now, not found at the first event of the run
            folder = Path(params.evidence_dir).expanduser()
            why = unwritable_dir(folder)
            if why:
                problems.append(f"evidence_dir: cannot save clips in {folder} ({why})")
        return problems

    def _check(self) -> list[str]:
        if self._names is None:
            self._names = _class_map_for(self.params)
        return self.validate_params(self.params, self._names)

    def _raise_problems(self, problems: list[str]) -> None:
        if problems:
            raise NegotiationError("; ".join(f"nodes[{self.id}].params.{p}" for p in problems))

    # ------------------------------------------------------------------ lifecycle
    def __init__(self, node_id: str, params: Params):
        super().__init__(node_id, params)
        self._names: list[str] | None = None
        self._model: YamnetModel | None = None
        self._feats: YamnetFeatures | None = None
        self._decider: EventDecider | None = None
        # appended by background threads, drained (popleft) by process: deque ops are atomic
        self._errors: deque[str] = deque(maxlen=1000)
        self._count_lock = threading.Lock()
        self._evidence: BackgroundJobs | None = None
        self._webhook: BackgroundJobs | None = None
        self._ring: HistoryRing | None = None
        self._clips: dict[str, dict[str, Any]] = {}
        self._counts = dict(patches=0, events=0, clips_written=0, clips_failed=0,
                            clips_dropped=0, clips_pruned=0, webhook_posted=0, webhook_failed=0,
                            webhook_dropped=0, errors_reported=0, clips_unsaved_at_end=0,
                            webhook_undelivered_at_end=0)
        self._infer_s = 0.0
        self._by_group: dict[str, int] = {}
        self.rate = SAMPLE_RATE
        #: this node's clips in evidence_dir, oldest first: (stem, bytes); writer thread only
        self._kept: deque[tuple[str, int]] | None = None
        self._kept_bytes = 0

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        spec = inputs["audio"]
        require_rate(self.id, "audio", spec, (SAMPLE_RATE,))
        require_mono(self.id, "audio", spec)
        self._raise_problems(self._check())
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        p = self.params
        self._raise_problems(self._check())
        self.close()  # a second prepare must not leak the background threads of the first
        mp, cm = _resolve_model(p)
        self._model = YamnetModel(mp, cm, threads=p.threads)
        hop_frames = _hop_frames(p)
        self._feats = YamnetFeatures(hop_frames)
        self._feats.warmup()
        self._decider = decider_for(p, self._model.class_names, hop_frames)
        steps = self._model.score_steps()
        if steps is not None:
            for msg in thresholds_between_steps(p, steps, self._decider.smoothing):
                log.warning("%s: %s", self.id, msg)
        self._model.scores(np.zeros(PATCH_SHAPE, np.float32))  # warm the session
        if p.evidence_dir:
            # pre-roll + longest clip + how far a start can lie behind the audio that decides it
            # (look-back, onset search, minimum duration, a patch and the smoothing window)
            delay = PATCH_SAMPLES + (p.smoothing_patches + 1) * hop_frames * HOP
            extra_s = (p.pre_roll_s + p.max_clip_s + p.lookback_s + p.onset_search_s
                       + p.min_duration_s + 1.0)
            cap = int(extra_s * SAMPLE_RATE) + delay
            self._ring = HistoryRing(cap)
            # _check() above refused a folder that cannot be written; one that goes (or a
            # disk that fills) from now on is reported per clip, never fatal
            try:
                Path(p.evidence_dir).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self._report(f"evidence_dir {p.evidence_dir!r} cannot be created "
                             f"({e.strerror or e}); clips will not be saved until it can")
            self._evidence = BackgroundJobs(f"{self.id}-evidence", self._write_clip, self._errors)
        if p.webhook_url:
            self._webhook = BackgroundJobs(f"{self.id}-webhook", self._post, self._errors,
                                        WEBHOOK_QUEUE, drop_oldest=True)
        self.reset()

    def reset(self) -> None:
        if self._feats is not None:
            self._feats.reset()
        if self._decider is not None:
            self._decider.reset()
        self._pos = 0  # stream samples received
        self._offset: int | None = None  # absolute index of stream sample 0
        self._last_patch = -1
        self._clips = {}
        if self._ring is not None:
            self._ring.clear()

    # ------------------------------------------------------------------ processing
    def process(self, io: NodeIO) -> None:
        self._drain_errors(io)
        if not io.has_audio("audio"):
            return
        x = io.audio("audio")
        start = io.start.get("audio", self._pos if self._offset is None else
                             self._pos + self._offset)
        if self._offset is None:
            self._offset = start - self._pos
        elif start != self._pos + self._offset:
            # quanta were dropped upstream (worker queue full): keep the absolute clock right
            self._offset = start - self._pos
        n = len(x)
        if n == 0:
            return
        mono = x[:, 0] if x.ndim == 2 else x
        if self._ring is not None:
            self._ring.write(mono, self._pos)
        self._pos += n
        assert self._feats is not None
        for p, patch in self._feats.push(mono):
            self._patch(io, p, patch)
        self._clip_progress()

    def flush(self, io: NodeIO) -> None:
        self._drain_errors(io)
        if self._feats is None or self._decider is None:
            return
        for p, patch in self._feats.finish():
            self._patch(io, p, patch)
        if self._last_patch >= 0:
            for d in self._decider.finish(self._last_patch, self._pos):
                self._emit(io, d)
        self._clip_progress(final=True)
        # the stream ends: give queued clips / posts their time, then say what did not make it
        for label, b, wait, key in self._side_outputs():
            if b is not None and not b.wait_idle(wait):
                n = b.abandon()
                self._inc(key, n)
                if n:
                    self._report(f"{n} {label}: still queued {wait:.0f} s after the stream "
                                 "ended")
        self._drain_errors(io)

    def _patch(self, io: NodeIO, p: int, patch: np.ndarray) -> None:
        assert self._model is not None and self._decider is not None
        t0 = time.perf_counter()
        scores = self._model.scores(patch)
        self._infer_s += time.perf_counter() - t0
        self._counts["patches"] += 1
        self._last_patch = p
        for d in self._decider.update(p, scores, patch):
            self._emit(io, d)
        if self.params.emit_scores:
            dec = self._decider
            k = self.params.scores_top_k
            top = np.argsort(-scores, kind="stable")[:k] if k else ()
            names = self._model.class_names
            vals = tuple((g, round(float(dec.smoothed[i]), 4)) for i, g in enumerate(dec.names))
            vals += tuple((names[int(i)], round(float(scores[i]), 4)) for i in top)
            io.emit("scores", SoundScores(self._abs(dec.centre_sample(p)), self.rate, self.id,
                                          scores=vals))

    def _abs(self, stream_sample: int) -> int:
        return stream_sample + (self._offset or 0)

    def _emit(self, io: NodeIO, d: Decision) -> None:
        ev: Event
        if d.kind == "started":
            ev = SoundEventStarted(self._abs(d.sample), self.rate, self.id, group=d.group,
                                   score=round(d.score, 4), top_classes=d.top_classes)
            self._counts["events"] += 1
            self._by_group[d.group] = self._by_group.get(d.group, 0) + 1
            if self._ring is not None:
                pre = int(self.params.pre_roll_s * self.rate)
                self._clips[d.group] = {"from": max(0, d.sample - pre), "start": d.sample,
                                        "event": ev.to_dict(), "wall": time.time(),
                                        "utc": self._utc(d.sample)}
        else:
            ev = SoundEventStopped(self._abs(d.sample), self.rate, self.id, group=d.group,
                                   start_sample=self._abs(d.start_sample),
                                   max_score=round(d.score, 4))
            clip = self._clips.get(d.group)
            if clip is not None:
                clip["stopped"] = ev.to_dict()
                clip["done"] = True
        io.emit("events", ev)
        if self._webhook is not None and not self._webhook.submit(json.dumps(
                {**ev.to_dict(), "utc": self._utc(d.sample),
                 "host": socket.gethostname()}).encode()):
            n = self._inc("webhook_dropped")
            if _power_of_ten(n):
                self._report(f"webhook: {self._webhook.maxsize} posts waiting (endpoint down or "
                             f"too slow): the oldest dropped ({n} so far)")

    def _utc(self, sample: int) -> str:
        """Wall-clock time (UTC, ISO 8601) of stream sample ``sample``: now, less how far the
        stream has gone past it (exact for a live microphone)."""
        t = time.time() - max(self._pos - sample, 0) / self.rate
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")

    # ------------------------------------------------------------------ evidence
    def _ring_read(self, a: int, b: int) -> np.ndarray:
        """Stream samples ``[a, b)`` still in the ring (a new array, once per clip)."""
        ring = self._ring
        assert ring is not None
        a = max(a, self._pos - len(ring.buf), 0)
        out = np.empty(max(0, b - a), np.float32)
        ring.read_into(out, a, b)
        return out

    def _clip_progress(self, final: bool = False) -> None:
        if not self._clips or self._evidence is None:
            return
        max_len = int(self.params.max_clip_s * self.rate)
        for g in list(self._clips):
            c = self._clips[g]
            if c.get("written"):
                if c.get("done") or final:
                    del self._clips[g]
                continue
            full = self._pos - c["from"] >= max_len
            if not (c.get("done") or full or final):
                continue
            audio = self._ring_read(c["from"], min(self._pos, c["from"] + max_len))
            meta = {"node": self.id, "group": g, "sample_rate": self.rate,
                    "clip_start_sample": self._abs(c["from"]), "pre_roll_s":
                    (c["start"] - c["from"]) / self.rate, "started": c["event"],
                    "stopped": c.get("stopped"), "truncated": bool(full and not c.get("done")),
                    "utc": c["utc"]}
            name = "{}_{}_{}_{:.2f}s".format(time.strftime("%Y%m%d-%H%M%S",
                                                           time.localtime(c["wall"])),
                                             self.id, g, self._abs(c["start"]) / self.rate)
            if not self._evidence.submit((name, audio, meta)):
                n = self._inc("clips_dropped")
                if _power_of_ten(n):
                    self._report(f"evidence clip {name} dropped: {self._evidence.maxsize} clips "
                                 f"waiting for the disk ({n} dropped so far)")
            c["written"] = True
            if c.get("done") or final:
                del self._clips[g]

    def _write_clip(self, job: tuple[str, np.ndarray, dict]) -> None:
        import soundfile as sf

        name, audio, meta = job
        folder = Path(self.params.evidence_dir).expanduser()
        path = folder / f"{name}.wav"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, self.rate, subtype="PCM_16")
            meta = {**meta, "file": path.name, "duration_s": round(len(audio) / self.rate, 3)}
            path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
            self._inc("clips_written")
        except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError(RuntimeError)
            self._inc("clips_failed")
            for leftover in (path, path.with_suffix(".json")):  # no truncated clips (disk full)
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass
            self._report(f"evidence clip {name} not saved in {folder}: "
                         f"{getattr(e, 'strerror', None) or e}")
            return
        self._prune(folder, path)

    def _prune(self, folder: Path, new: Path) -> None:
        """Keep this node's clips under ``evidence_max_mb``: delete the oldest (writer thread).
        The folder is scanned once (clips of earlier runs count, oldest written first); other
        files in the folder are never touched."""
        cap = self.params.evidence_max_mb * 1e6
        if not cap:
            return
        if self._kept is None:
            found = []
            for f in folder.glob(f"*_{self.id}_*.wav"):
                try:  # ids may hold '_': the sidecar says whose clip it is
                    mine = json.loads(f.with_suffix(".json").read_text()).get("node") == self.id
                except (OSError, ValueError, AttributeError):
                    mine = False
                if mine and f != new:
                    found.append((_mtime(f), f.stem, _size(f) + _size(f.with_suffix(".json"))))
            self._kept = deque((stem, b) for _, stem, b in sorted(found))
            self._kept_bytes = sum(b for _, b in self._kept)
        size = _size(new) + _size(new.with_suffix(".json"))
        self._kept.append((new.stem, size))
        self._kept_bytes += size
        while self._kept_bytes > cap and len(self._kept) > 1:
            stem, b = self._kept.popleft()
            self._kept_bytes -= b
            for f in (folder / f"{stem}.wav", folder / f"{stem}.json"):
                try:
                    f.unlink(missing_ok=True)
                except OSError:  # read-only, or gone: it is no longer ours to count
                    pass
            n = self._inc("clips_pruned")
            if _power_of_ten(n):
                self._report(f"evidence_dir {folder} holds evidence_max_mb = "
                             f"{self.params.evidence_max_mb:g} MB of clips: the oldest deleted "
                             f"to make room ({n} so far)")

    # ------------------------------------------------------------------ webhook
    def _post(self, body: bytes) -> None:
        p = self.params
        req = urllib.request.Request(p.webhook_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "audio-engine sound.yamnet"})
        last = ""
        stop = self._webhook.stop_event if self._webhook is not None else threading.Event()
        for attempt in range(p.webhook_retries + 1):
            if attempt:
                if stop.wait(min(0.25 * 2 ** (attempt - 1), 5.0)):
                    break
            try:
                with urllib.request.urlopen(req, timeout=p.webhook_timeout_s) as r:
                    r.read()
                self._inc("webhook_posted")
                return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    break  # the server refuses this request: retrying will not help
            except (urllib.error.URLError, OSError, ValueError,
                    http.client.HTTPException) as e:  # HTTPException: a garbled reply
                last = str(getattr(e, "reason", None) or e) or type(e).__name__
            except Exception as e:  # noqa: BLE001 - whatever it is, the post is counted failed
                last = f"{type(e).__name__}: {e}"
        self._inc("webhook_failed")
        self._report(f"webhook POST to {p.webhook_url} failed after {attempt + 1} attempt(s): "
                     f"{last}")

    # ------------------------------------------------------------------ errors, stats, close
    def _inc(self, key: str, n: int = 1) -> int:
        """Add ``n`` to a counter (any thread); returns its new value."""
        with self._count_lock:
            self._counts[key] += n
            return self._counts[key]

    def _report(self, msg: str) -> None:
        log.info("%s: %s", self.id, msg)  # reported as engine.node_error
        self._errors.append(msg)

    def _drain_errors(self, io: NodeIO) -> None:
        errs = self._errors
        while errs:
            msg = errs.popleft()
            self._inc("errors_reported")
            io.emit("events", NodeError(self._abs(self._pos), self.rate, self.id,
                                        message=f"sound.yamnet: {msg}"))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until queued evidence clips and webhook posts are done (tests, shutdown)."""
        ok = True
        for _, b, _, _ in self._side_outputs():
            if b is not None:
                ok = b.wait_idle(timeout) and ok
        return ok

    def stats(self) -> dict[str, Any]:
        with self._count_lock:
            d: dict[str, Any] = dict(self._counts)
        d["inference_ms_per_patch"] = round(1e3 * self._infer_s / max(1, d["patches"]), 3)
        d["events_by_group"] = dict(self._by_group)
        for label, b in (("clips", self._evidence), ("webhook", self._webhook)):
            if b is not None:  # while running (after close, everything is in a counter)
                d[f"{label}_pending"] = b.pending
        return d

    def _side_outputs(self) -> tuple[tuple[str, Any, float, str], ...]:
        """(what is lost if it does not finish, its worker or None, how long it may take at the
        end of the stream, the counter of what it gave up) for the evidence clips and the
        webhook."""
        p = self.params
        return (("evidence clip(s) not saved", self._evidence, 10.0, "clips_unsaved_at_end"),
                ("webhook post(s) not delivered", self._webhook,
                 min(10.0, p.webhook_timeout_s * (p.webhook_retries + 1) + 1.0),
                 "webhook_undelivered_at_end"))

    def close(self) -> None:
        for _, b, wait, _ in self._side_outputs():
            if b is not None:
                b.close(wait)
        self._evidence = self._webhook = None
        self._model = None


def _hop_frames(params: Any) -> int:
    """``patch_hop_s`` in 10 ms feature frames (at least one)."""
    return max(1, int(round(params.patch_hop_s * SAMPLE_RATE / HOP)))


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0


def _mtime(f: Path) -> float:
    try:
        return f.stat().st_mtime
    except OSError:
        return 0.0


def _power_of_ten(n: int) -> bool:
    """Report the 1st, 10th, 100th... of a repeated problem, not every one."""
    return n > 0 and 10 ** round(math.log10(n)) == n


def all_groups(params: Any) -> dict[str, list[str]]:
    """The groups a node listens for: ``groups`` plus ``extra_groups`` (which wins on a name)."""
    extra = params.extra_groups if isinstance(params.extra_groups, dict) else {}
    return {**params.groups, **extra}



def decider_for(params: Any, class_names: list[str], hop_frames: int) -> EventDecider:
    """The :class:`EventDecider` a ``sound.yamnet`` node with ``params`` uses (hop in 10 ms
    frames): its groups (with ``extra_groups``) as class indices and each group's thresholds."""
    index = {n: i for i, n in enumerate(class_names)}
    groups = {g: [index[n] for n in cl] for g, cl in all_groups(params).items()}
    per_group = {**DEFAULT_THRESHOLDS, **params.thresholds} if params.default_thresholds \
        else dict(params.thresholds)
    th = {g: tuple(per_group.get(g, (params.on_threshold, params.off_threshold)))
          for g in groups}
    return EventDecider(groups, class_names, th, hop_frames * HOP,  # type: ignore[arg-type]
                        params.smoothing, params.smoothing_patches, params.min_duration_s,
                        params.cooldown_s, params.lookback_s, onset_search_s=params.onset_search_s,
                        onset_rise_db=params.onset_rise_db)


def thresholds_between_steps(params: Any, steps: np.ndarray, smoothing: str) -> list[str]:
    """A line for each threshold set in ``params`` (``on_threshold`` / ``off_threshold`` other
    than their defaults, every entry of ``thresholds``) that falls strictly between two of a
    quantised model's score ``steps`` (:meth:`YamnetModel.score_steps`) where it is compared
    with one patch's score: it acts as the step above it. An *on* threshold is (smoothing
    'hold', 'max' or 'none'); an *off* threshold only with 'max' or 'none' (the 'hold' and
    'mean' moving means fall between steps). ``smoothing`` as the decider resolved it."""
    fields = {f.name: f.default for f in dataclasses.fields(params)}
    given: list[tuple[str, float, bool]] = [
        (name, getattr(params, name), name == "on_threshold")
        for name in ("on_threshold", "off_threshold") if getattr(params, name) != fields[name]]
    th = params.thresholds if isinstance(params.thresholds, dict) else {}
    for g, (on, off) in th.items():
        given += [(f"thresholds.{g} on", on, True), (f"thresholds.{g} off", off, False)]
    out = []
    for name, value, is_on in given:
        if smoothing not in (("hold", "max", "none") if is_on else ("max", "none")):
            continue
        i = int(np.searchsorted(steps, np.float32(value)))  # first step >= value
        if 0 < i < len(steps) and steps[i] != np.float32(value):
            lo, hi = (f"{round(float(v), 4):g}" for v in steps[i - 1:i + 1])
            out.append(f"{name} = {value:g} lies between the quantised model's score steps "
                       f"{lo} and {hi} (a score is never between them): it acts as {hi}")
    return out


def _class_hint(name: str, class_names: list[str]) -> str:
    """Case first, then a display name that holds ``name`` as one of its comma-separated
    parts ('Smoke alarm' -> 'Smoke detector, smoke alarm', 'Baby cry' -> 'Baby cry, infant
    cry'), then a name that contains it, then the closest spelling."""
    key = name.strip().lower()
    low = {n.lower(): n for n in class_names}
    if key in low:
        return f" (did you mean '{low[key]}'?)"
    for n in class_names:
        if key in (part.strip().lower() for part in n.split(",")):
            return f" (did you mean '{n}'?)"
    for n in class_names:
        if key and key in n.lower():
            return f" (did you mean '{n}'?)"
    return did_you_mean(name, class_names)


def offline_decisions(model: YamnetModel, waveform: np.ndarray, params: Any
                      ) -> tuple[np.ndarray, list[Decision]]:
    """Offline reference: YAMNet's whole-clip patches (plain NumPy features, with its end
    padding), the model, and the node's decision logic. Returns ``(scores [P, 521], decisions)``
    with samples counted from the clip's first sample."""
    from ..dsp.yamnet_features import reference_patches

    hop_frames = _hop_frames(params)
    patches = reference_patches(waveform, hop_frames).astype(np.float32)
    scores = model.scores_for_patches(patches)
    dec = decider_for(params, model.class_names, hop_frames)
    out: list[Decision] = []
    for p in range(len(scores)):
        out.extend(dec.update(p, scores[p], patches[p]))
    if len(scores):
        out.extend(dec.finish(len(scores) - 1, len(waveform)))
    return scores, out

