"""``asr.whisper``: streaming speech recognition with Whisper run as ONNX (onnxruntime).

Streaming policy (what a live captioner needs, after whisper_streaming's LocalAgreement):

* Only speech is decoded: the node takes the VAD's gated ``speech`` audio and its
  ``vad.speech_started`` / ``vad.speech_stopped`` events. Each VAD segment is one utterance.
* Log-mel frames are computed incrementally (Numba kernel) as speech audio arrives.
* While someone speaks, the current utterance is re-decoded every ``step_ms`` of new audio and a
  ``transcript.partial`` is emitted: words on which two consecutive hypotheses agree become
  *stable* and never change afterwards; the rest is the unstable tail.
* The encoder runs on the utterance's real length (plus a short zero tail), not a padded 30 s
  window (whisper.cpp's ``audio_ctx``). If a trimmed decode loops or never ends, the final falls
  back to the full 30 s window; so does a final decoded with low confidence (average
  log-probability under ``recheck_logprob``: short phrases such as "ask not" suffer most from
  the trimmed window), and the more confident of the two results is kept. A final's trimmed
  window is at least ``min_window_s`` (10 s): on 1-2 s of speech plus the 3 s tail Whisper
  repeats short phrases ("Yes? Yes? Yes?", "10 of clubs 10 of clubs"), which cost a 30 s
  fallback (a quarter of a second of encoder with tiny.en) for most short turns.
* At ``vad.speech_stopped``, or when an utterance reaches ``max_window_s`` (cut at its quietest
  30 ms in the last 5 s, the audio after the cut carried into the next part), a
  ``transcript.final`` is emitted with text, start/end on the audio clock, average
  log-probability and no-speech probability; a segment (or part) that gets no final gets a
  ``transcript.skipped`` with the reason.
* Guards: results with high no-speech probability and low log-probability are dropped, as are
  repetition loops (compression ratio > 2.4); a partial under ``logprob_threshold`` is not shown
  (a guess on the first syllables); previous text is never used as a prompt by default.
* Known hallucinations: a result that is nothing but one of the phrases Whisper writes on
  non-speech ("Thank you.", "you", "Thanks for watching!": :data:`HALLUCINATIONS`) is dropped
  when *either* signal of the no-speech rule says non-speech (no-speech probability over
  ``no_speech_threshold`` or average log-probability under ``logprob_threshold``), not only
  when both do: on music or noise that the VAD lets through, Whisper says "Thank you." with
  confidence (log-probability -0.6) while rating no speech at 0.8-0.95.
* Speculative final (``speculative``): the VAD releases the speech audio up to ``speech_pad_ms``
  after the point where a silence began, then holds the rest back until the silence either ends
  the segment (``min_silence_ms``: ``vad.speech_stopped``) or is broken by more speech. Once no
  speech audio has come for ``speculate_after_ms`` while an utterance is open, the final is
  decoded on the audio so far, in the silence; if the stop then comes with no audio after it,
  that result is the final (the same input, so the same text), emitted as soon as the stop
  arrives instead of one decode later. If speech resumes, the result is thrown away (counted
  in ``speculative_wasted``; the worker was idle). The node asks the engine for idle quanta
  (:attr:`~engine.node.Node.idle_quanta`) to see the silence.
* When decoding falls behind (items queued behind the current one), partials are skipped; finals
  never are. The node's queue is bounded and its drops are counted by the engine.

Real-time rules: the node runs on its own worker thread (``thread = "worker"``); onnxruntime
releases the GIL during inference, so the DSP thread and audio callbacks keep running.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dsp.whisper_mel import StreamingLogMel, normalize_log_mel
from ..errors import ModelError
from ..events import (
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    TranscriptSkipped,
)
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
)

RATE = 16000
HOP = 160
MAX_FRAMES = 3000
_NORM = re.compile(r"[^\w']+")


def _norm_word(w: str) -> str:
    return _NORM.sub("", w.lower())


def repeats_itself(text: str) -> bool:
    """True when the whole text is one phrase said k >= 2 times ("yes yes", "seven of clubs
    seven of clubs"): on a short trimmed window Whisper sometimes loops like this."""
    words = [_norm_word(w) for w in text.split()]
    n = len(words)
    return any(n % p == 0 and words == words[:p] * (n // p) for p in range(1, n // 2 + 1))


def resolve_model(name: str) -> Path:
    """A model name from the manifest (``whisper-tiny.en``) or a folder with a converted model."""
    from ..models.manifest import load_manifest, models_dir

    p = Path(name)
    if p.is_dir():
        return p
    if name in load_manifest():
        return models_dir() / name
    raise ModelError(f"unknown Whisper model '{name}': give a manifest name (see "
                     "`audio-engine models list`) or a folder made by "
                     "`audio-engine models convert-whisper CT2_DIR OUT_DIR`")


#: What Whisper writes on non-speech (music, noise, silence), learned from subtitles (video
#: outros, sign-offs, fillers); normalised as :func:`_norm_text`. After the frequent entries of
#: the "bag of hallucinations" of Barański et al. 2025 (arXiv 2501.11378) and the phrases
#: reported in openai/whisper's discussions; only whole results that are one of these count.
HALLUCINATIONS = frozenset({
    "you", "thank you", "thank you very much", "thank you so much", "thanks",
    "thanks for watching", "thank you for watching", "thanks for listening",
    "thank you for listening", "please subscribe", "subscribe", "like and subscribe", "bye",
    "bye bye", "goodbye", "so", "oh", "okay", "hmm", "mm", "the end",
    "subtitles by the amara org community"})


def _norm_text(text: str) -> str:
    """Lower-case words without punctuation; dots and hyphens split words ("Amara.org",
    "Bye-bye")."""
    return " ".join(w for w in (_norm_word(w) for w in re.split(r"[\s.\-]+", text)) if w)


def known_hallucination(text: str) -> bool:
    """True when the whole ``text`` is one of :data:`HALLUCINATIONS` ("Thank you.", "You",
    "Thanks for watching!"), case and punctuation aside."""
    return _norm_text(text) in HALLUCINATIONS


MIN_WORDS_PER_S = 0.5  # under this a final has stopped early (speech has 2-3 words per second)


def quiet_frame(raw: np.ndarray) -> int:
    """The quietest 30 ms (mean log-mel level over 3 frames) in the middle third of ``raw``."""
    n = raw.shape[1]
    level = np.convolve(raw.mean(axis=0), np.ones(3) / 3, mode="same")
    lo, hi = n // 3, max(n // 3 + 1, 2 * n // 3)
    return lo + int(np.argmin(level[lo:hi]))


def join_results(parts: list) -> Any:
    """Consecutive decode results ``[(result, offset_s), ...]`` as one: texts joined, word
    times shifted by each part's offset, log-probability averaged over tokens."""
    if not parts:
        return None
    first = parts[0][0]
    if len(parts) == 1:
        return first
    from dataclasses import replace

    tokens = [t for r, _ in parts for t in r.tokens]
    weight = [max(1, len(r.tokens)) for r, _ in parts]
    words = None
    if all(r.words is not None for r, _ in parts):
        words = [replace(w, start=w.start + off, end=w.end + off) for r, off in parts
                 for w in r.words]
    return replace(first, tokens=tokens, text=" ".join(r.text.strip() for r, _ in parts),
                   avg_logprob=sum(r.avg_logprob * k for (r, _), k in zip(parts, weight,
                                                                          strict=True))
                   / sum(weight),
                   no_speech_prob=min(r.no_speech_prob for r, _ in parts),
                   compression_ratio=max(r.compression_ratio for r, _ in parts),
                   words=words, stop_reason="eot")


def quiet_cut(x: np.ndarray, rate: int, search_s: float = 5.0, keep_s: float = 1.0) -> int:
    """Where to cut run-on speech ``x`` that must be finalised: the middle of its quietest
    30 ms (10 ms steps) between ``search_s`` and ``keep_s`` before its end (a pause between
    words or phrases, at worst a stop consonant's closure), never in its first half."""
    hop = rate // 100
    frames = len(x) // hop
    if frames < 8:
        return len(x)
    e = np.square(x[: frames * hop].astype(np.float64)).reshape(frames, hop).mean(axis=1)
    e3 = np.convolve(e, np.ones(3) / 3, mode="same")
    lo = max(frames // 2, frames - int(search_s * 100))
    hi = max(lo + 1, frames - int(keep_s * 100))
    j = lo + int(np.argmin(e3[lo:hi]))
    return min(len(x), j * hop + hop // 2)


@dataclass
class _Utterance:
    start: int  # absolute input sample (16 kHz clock) of the first speech sample
    end: int | None = None  # known once the VAD says it stopped
    speech_end: int | None = None  # the same without the VAD's end padding
    received: int = 0
    cut: int = 0  # samples already finalised by max_window_s cuts


@dataclass(frozen=True)
class _Speculation:
    """A final decoded in the end-of-turn silence, before the VAD confirmed the end."""

    utt: _Utterance
    samples: int  # the utterance's audio it was decoded on
    result: Any
    counts: tuple[int, int, int]  # rechecks, fallbacks, splits it added (taken back if stale)


@register
class WhisperAsr(Node):
    """Streaming Whisper recogniser (see the module docstring for the policy)."""

    type_name = "asr.whisper"
    inputs = {"audio": AUDIO, "events": EVENTS}
    outputs = {"events": EVENTS}
    thread = "worker"
    queue_policy = "drop_oldest"
    queue_size = 6000  # 60 s of 10 ms quanta

    @dataclass(frozen=True)
    class Params:
        model: str = param("whisper-tiny.en", doc="manifest model name or converted folder")
        language: str = param("en", doc="language code, or 'auto' to detect (multilingual)")
        task: str = param("transcribe", choices=("transcribe", "translate"))
        step_ms: float = param(500.0, ge=100, le=10000, doc="partial re-decode interval")
        partials: bool = param(True, doc="emit transcript.partial while speaking")
        max_window_s: float = param(15.0, gt=1, le=28, doc="finalise run-on speech at its "
                                    "quietest point in the last 5 s once it is this long")
        encoder: str = param("trimmed", choices=("trimmed", "full"),
                             doc="encode the real length (trimmed) or a padded 30 s window")
        tail_s: float = param(3.0, ge=0, le=10, doc="zero mel after the audio (trimmed); "
                                                    "3 s measured as WER-neutral")
        min_window_s: float = param(10.0, ge=0, le=30, doc="a final's trimmed window is at "
                                    "least this long (zero mel after the audio): on a window "
                                    "of 1-2 s of speech + tail_s Whisper repeats short phrases "
                                    "('Yes? Yes? Yes?') and the final falls back to 30 s")
        word_timestamps: bool = param(False, doc="word timings in transcript.final")
        no_speech_threshold: float = param(0.6, ge=0, le=1)
        logprob_threshold: float = param(-1.0, le=0)
        recheck_logprob: float = param(-0.8, le=0, doc="a trimmed final less confident than "
                                       "this (average log-probability) is decoded again on the "
                                       "30 s window; the more confident result is kept")
        compression_ratio_threshold: float = param(2.4, gt=0)
        hallucination_guard: bool = param(True, doc="drop a result that is only one of "
                                          "Whisper's known non-speech phrases ('Thank you.', "
                                          "'you') when either no-speech signal says so")
        min_utterance_ms: float = param(200.0, ge=0, doc="shorter speech is not decoded")
        condition_on_previous: bool = param(False, doc="prompt with the previous final")
        threads: int = param(1, ge=1, le=16, doc="onnxruntime intra-op threads")
        speculative: bool = param(True, doc="decode the final in the end-of-turn silence, "
                                  "before vad.speech_stopped, and use it if no speech follows")
        speculate_after_ms: float = param(50.0, ge=0, le=5000, doc="no speech audio for this "
                                          "long starts the speculative final (more than one "
                                          "VAD window, less than min_silence - speech_pad)")

    @classmethod
    def validate_params(cls, p: Params) -> list[str]:
        from ..models.whisper_convert import converted_ok

        try:
            folder = resolve_model(p.model)
        except ModelError as e:
            return [f"model: {e}"]
        if not converted_ok(folder):
            return [f"model: '{p.model}' is not installed or not converted in {folder}: run "
                    f"`audio-engine models fetch {p.model}` (or `make models`)"]
        tokens = json.loads((folder / "whisper.json").read_text())["tokens"]
        if not tokens["multilingual"] and p.language not in ("en", "auto"):
            return [f"language: '{p.model}' is English-only, got language = '{p.language}'; "
                    "use a multilingual model: model = \"whisper-base\" (audio-engine models "
                    "fetch whisper-base)"]
        langs = dict(tokens["languages"]) if tokens["multilingual"] else {}
        if langs and p.language != "auto" and p.language not in langs:
            return [f"language: '{p.language}'{did_you_mean(p.language, langs)} is not a "
                    f"language of {p.model} (use a code such as en, de, fr, or 'auto')"]
        return []

    def negotiate(self, inputs: dict[str, AudioSpec]) -> dict[str, AudioSpec]:
        require_rate(self.id, "audio", inputs["audio"], (RATE,))
        require_mono(self.id, "audio", inputs["audio"])
        return {}

    def prepare(self, specs: dict[str, AudioSpec]) -> None:
        from ..models.whisper_onnx import WhisperOnnx

        p = self.params
        self.model = WhisperOnnx(resolve_model(p.model), threads=p.threads)
        self.mel = StreamingLogMel(self.model.n_mels)
        cap = int(RATE * (p.max_window_s + 2))
        self.audio = np.zeros(cap, np.float32)
        self.raw = np.zeros((self.model.n_mels, MAX_FRAMES + 10), np.float32)
        self.utts: list[_Utterance] = []
        self.n_audio = 0  # samples of the current utterance in self.audio
        self.n_raw = 0
        self.since_partial = 0
        self.prev_words: list[str] = []
        self.stable: list[str] = []
        self.prev_text = ""
        self.language = None if p.language == "auto" else p.language
        self.decode_s = 0.0
        self.audio_s = 0.0
        self.partials_emitted = 0
        self.partials_skipped = 0
        self.partials_unsure = 0
        self.finals_emitted = 0
        self.finals_dropped = 0
        self.fallbacks = 0
        self.rechecks = 0
        self.final_splits = 0
        self.idle_quanta = bool(p.speculative)  # the engine calls us on quiet quanta too
        self.quiet = 0  # calls in a row without speech audio
        self.spec: _Speculation | None = None
        self.spec_decodes = 0
        self.spec_used = 0
        self.spec_wasted = 0
        # the end of an utterance reached -> its final emitted (ms)
        self.final_ms: deque[float] = deque(maxlen=2000)
        # warm the sessions so the first caption is not late
        self.model.decode(self.model.encode(np.zeros((self.model.n_mels, 100), np.float32)),
                          language=self._lang(), max_tokens=2)

    def _lang(self) -> str | None:
        return self.language if self.model.multilingual else None

    # ------------------------------------------------------------------ streaming
    def process(self, io: NodeIO) -> None:
        for ev in io.events("events"):
            if isinstance(ev, SpeechStarted):
                self.utts.append(_Utterance(start=ev.sample))
            elif isinstance(ev, SpeechStopped):
                for u in self.utts:
                    if u.end is None:
                        u.end = ev.sample
                        u.speech_end = ev.speech_end_sample or ev.sample
                        if u.cut == 0:  # after a cut, start has moved past the VAD's start
                            u.start = ev.start_sample
                        break
        x = io.audio("audio") if io.has_audio("audio") else None
        if x is not None and len(x):
            self.quiet = 0
            self._take(x[:, 0], io)
        else:
            self.quiet += 1
        self._finish_complete(io)
        if (self.params.partials and self.utts and self.since_partial >= self._step()
                and self.n_audio >= self._min_len()):
            if io.backlog > 2:
                self.partials_skipped += 1
            else:
                self._partial(io)
            self.since_partial = 0
        if (self.params.speculative and self.quiet
                and self.quiet * self.quantum_s * 1000 >= self.params.speculate_after_ms):
            self._speculate(io)

    def _step(self) -> int:
        return int(self.params.step_ms * RATE / 1000)

    def _min_len(self) -> int:
        return int(self.params.min_utterance_ms * RATE / 1000)

    def _take(self, x: np.ndarray, io: NodeIO) -> None:
        """Append speech audio to the utterance(s) it belongs to, in order."""
        pos = 0
        while pos < len(x):
            if not self.utts:
                return  # audio without a segment (cannot happen with a VAD upstream)
            u = self.utts[0]
            room = len(x) - pos
            if u.end is not None:
                room = min(room, (u.end - u.start) - u.received)
            cap_left = len(self.audio) - self.n_audio
            if room <= 0:
                self._final(io, u)
                continue
            n = min(room, cap_left)
            if self.spec is not None:  # speech went on: the speculative final is stale
                self._drop_speculation()
            chunk = x[pos:pos + n]
            self.audio[self.n_audio:self.n_audio + n] = chunk
            self._push_mel(chunk)
            self.n_audio += n
            u.received += n
            self.since_partial += n
            self.audio_s += n / RATE
            pos += n
            if self.n_audio >= int(self.params.max_window_s * RATE):
                self._cut_long(io, u)

    def _push_mel(self, chunk: np.ndarray) -> None:
        frames = self.mel.push(chunk)
        k = frames.shape[1]
        room = self.raw.shape[1] - self.n_raw
        k = min(k, room)
        self.raw[:, self.n_raw:self.n_raw + k] = frames[:, :k]
        self.n_raw += k

    def _finish_complete(self, io: NodeIO) -> None:
        while self.utts and self.utts[0].end is not None and \
                self.utts[0].received >= self.utts[0].end - self.utts[0].start:
            self._final(io, self.utts[0])

    # ------------------------------------------------------------------ speculative final
    def _speculate(self, io: NodeIO) -> None:
        """Decode the open utterance's final now, in the silence (see the module docstring)."""
        if not self.utts or io.backlog:
            return
        u = self.utts[0]
        n = self.n_audio
        if u.end is not None or n < self._min_len() or (self.spec is not None
                                                         and self.spec.samples == n):
            return
        before = (self.rechecks, self.fallbacks, self.final_splits)
        res = self._decode_utterance(self.mel.peek(), n)
        delta = (self.rechecks - before[0], self.fallbacks - before[1],
                 self.final_splits - before[2])
        self.spec = _Speculation(u, n, res, delta)
        self.spec_decodes += 1

    def _drop_speculation(self) -> None:
        """Speech went on after the silence: forget the speculative final (and its counts)."""
        assert self.spec is not None
        d = self.spec.counts
        self.rechecks -= d[0]
        self.fallbacks -= d[1]
        self.final_splits -= d[2]
        self.spec = None
        self.spec_wasted += 1

    # ------------------------------------------------------------------ decoding
    def _decode_utterance(self, tail: np.ndarray, n: int):
        """Final decode of the utterance's first ``n`` samples: the incremental log-mel frames
        so far plus ``tail`` (the streaming mel's last frames: ``finish()``, or ``peek()`` for
        a speculative final)."""
        raw = np.concatenate([self.raw[:, : self.n_raw], tail], axis=1)
        return self._decode_final(raw[:, : n // HOP], self.params.word_timestamps)

    def _decode(self, raw: np.ndarray, final: bool, words: bool = False):
        """Greedy decode of raw log-mel frames (normalised here, over these frames)."""
        p = self.params
        n = min(raw.shape[1], MAX_FRAMES)
        mel = normalize_log_mel(raw[:, :n])
        kw = dict(language=self._lang(), task=p.task, word_timestamps=words,
                  prompt=self.prev_text if p.condition_on_previous and self.prev_text else None)
        t0 = time.perf_counter()
        try:
            return self._run(mel, n, final, kw)
        finally:
            self.decode_s += time.perf_counter() - t0

    def _decode_final(self, raw: np.ndarray, words: bool, depth: int = 0):
        """Final decode of raw log-mel frames. Whisper sometimes stops early: after a command
        word it may end the text although narrative follows ("Go! Stop!" for 11 s of speech).
        A result with fewer than ``MIN_WORDS_PER_S`` words per second over 3 s or more is
        decoded again in two parts, split at the quietest frame of the middle third (up to
        twice), and the parts are joined when that gives more words."""
        res = self._decode(raw, final=True, words=words)
        n = raw.shape[1]
        if depth >= 2 or n < 300 or (res is not None and not self._rejection(res)
                                     and len(res.text.split()) >= MIN_WORDS_PER_S * n / 100):
            return res
        k = quiet_frame(raw)
        parts = [(self._decode_final(raw[:, :k], words, depth + 1), 0.0),
                 (self._decode_final(raw[:, k:], words, depth + 1), k / 100)]
        joined = join_results([(r, off) for r, off in parts if r is not None
                               and not self._rejection(r)])
        if joined is None or (res is not None and not self._rejection(res)
                              and len(joined.text.split()) <= len(res.text.split())):
            return res
        self.final_splits += 1
        return joined

    def _run(self, mel: np.ndarray, n: int, final: bool, kw: dict):
        """Trimmed encoder (``n`` real frames + a zero tail) with a token budget. A final whose
        trimmed decode loops or never ends falls back to the padded 30 s window; one decoded with
        an average log-probability under ``recheck_logprob`` is decoded there too and the more
        confident result is kept."""
        p = self.params
        m = self.model
        if p.encoder == "trimmed":
            total = min(MAX_FRAMES, n + int(p.tail_s * 100))
            if final:
                total = max(total, min(MAX_FRAMES, int(p.min_window_s * 100)))
            budget = int(10 * n / 100) + 10
            enc = m.encode(np.pad(mel, ((0, 0), (0, total - n))), content_frames=n)
            res = m.decode(enc, max_tokens=min(224, budget), stop_on_repetition=True, **kw)
            ok = res.stop_reason == "eot" and \
                res.compression_ratio <= p.compression_ratio_threshold and \
                not repeats_itself(res.text)
            if not final:
                return res if ok else None
            if ok and res.avg_logprob >= p.recheck_logprob:
                return res
            if ok:
                self.rechecks += 1
                full = self._full_window(mel, n, kw)
                return full if full.avg_logprob > res.avg_logprob else res
            self.fallbacks += 1
        return self._full_window(mel, n, kw)

    def _full_window(self, mel: np.ndarray, n: int, kw: dict):
        """Decode on the padded 30 s window Whisper was trained on."""
        padded = np.pad(mel, ((0, 0), (0, MAX_FRAMES - n)))
        return self.model.decode(self.model.encode(padded, content_frames=n), max_tokens=224,
                                 stop_on_repetition=True, **kw)

    def _rejected(self, res) -> bool:
        return bool(self._rejection(res))

    def _rejection(self, res) -> str:
        """Why Whisper's own rules reject a decode ("" if they do not)."""
        p = self.params
        if res is None or not any(ch.isalnum() for ch in res.text):
            return "low_confidence"
        weak = (res.no_speech_prob > p.no_speech_threshold,
                res.avg_logprob < p.logprob_threshold)
        if all(weak):
            return "no_speech"
        if p.hallucination_guard and any(weak) and known_hallucination(res.text):
            return "hallucination"
        if res.compression_ratio > p.compression_ratio_threshold:
            return "compression"
        return "repetition" if res.stop_reason == "repetition" else ""

    def _partial(self, io: NodeIO) -> None:
        u = self.utts[0]
        res = self._decode(self.raw[:, : self.n_raw], final=False)
        if self._rejected(res) or res.avg_logprob < self.params.logprob_threshold:
            # under logprob_threshold Whisper itself calls a decode failed (its temperature
            # fallback rule); on 0.5-1 s of a word that is a guess ("Like your cunt" for "What
            # your country"), not worth showing: wait for the next step
            self.partials_unsure += 1
            return
        words = res.text.split()
        # LocalAgreement-2: extend the stable prefix by what this and the previous hypothesis
        # agree on; stable words are never taken back
        k = len(self.stable)
        while (k < len(words) and k < len(self.prev_words)
               and _norm_word(words[k]) == _norm_word(self.prev_words[k])):
            k += 1
        if k > len(self.stable) and [_norm_word(w) for w in words[:len(self.stable)]] == \
                [_norm_word(w) for w in self.stable]:
            # committed words keep their first spelling; only new agreed words are appended
            self.stable = self.stable + words[len(self.stable):k]
        self.prev_words = words
        nst = len(self.stable)
        tail = words[nst:] if [_norm_word(w) for w in words[:nst]] == \
            [_norm_word(w) for w in self.stable] else words[min(nst, len(words)):]
        end = u.start + u.received
        io.emit("events", TranscriptPartial(end, RATE, self.id, stable=" ".join(self.stable),
                                            unstable=" ".join(tail), start_sample=u.start))
        self.partials_emitted += 1

    def _final(self, io: NodeIO, u: _Utterance) -> None:
        """Decode the current utterance and emit its final; reset for the next one.

        A VAD that splits long speech (``max_speech_s``) places the split at the quietest point
        of the speech it has already released, so this utterance may hold audio past its end:
        that audio is the start of the next utterance (which begins at the split) and is
        carried over to it. If a ``max_window_s`` cut already finalised audio past the split,
        the next utterance starts where that cut ended (nothing is decoded twice, and no
        empty part is reported)."""
        t0 = time.perf_counter()
        if self.utts and self.utts[0] is u:
            self.utts.pop(0)
        n = self.n_audio
        over = 0 if u.end is None else min(n, max(0, u.received - (u.end - u.start)))
        n -= over
        rest = self.audio[n:n + over].copy()
        speech_end = u.start + n if u.speech_end is None else min(u.speech_end, u.start + n)
        if n == 0 and u.cut > 0:
            pass  # everything up to the split went into the final of an earlier cut
        elif n >= self._min_len():
            if over:  # the incremental log-mel frames also covered the carried audio
                self._decode_and_emit(io, u.start, n, speech_end - u.start)
            elif self.spec is not None and self.spec.utt is u and self.spec.samples == n:
                res = self.spec.result  # decoded in the silence on exactly this audio
                self.spec = None
                self.spec_used += 1
                self._emit_final(io, res, u.start, u.start + n, speech_end)
            else:
                res = self._decode_utterance(self.mel.finish(), n)
                self._emit_final(io, res, u.start, u.start + n, speech_end)
            self.final_ms.append((time.perf_counter() - t0) * 1000)
        else:
            self.finals_dropped += 1
            io.emit("events", TranscriptSkipped(u.start + n, RATE, self.id, start_sample=u.start,
                                                reason="too_short"))
        self._reset_utterance()
        if over and self.utts and self.utts[0].start <= u.start + n:
            nxt = self.utts[0]
            if nxt.start < u.start + n:  # a cut went past the split: go on from the cut
                nxt.cut += u.start + n - nxt.start
                nxt.start = u.start + n
            self.audio[:over] = rest
            self.n_audio = over
            self._push_mel(rest)
            nxt.received += over
            self.since_partial = over

    def _emit_final(self, io: NodeIO, res, start: int, end: int, speech_end: int,
                    last: bool = True) -> None:
        reason = self._rejection(res)
        if reason:
            self.finals_dropped += 1
            io.emit("events", TranscriptSkipped(end, RATE, self.id, start_sample=start,
                                                reason=reason, last=last,
                                                text=res.text.strip() if res else ""))
            return
        text = res.text.strip()
        words = ()
        if res.words:
            t0 = start / RATE
            words = tuple((w.word.strip(), round(t0 + w.start, 3), round(t0 + w.end, 3))
                          for w in res.words)
        io.emit("events", TranscriptFinal(end, RATE, self.id, text=text, start_sample=start,
                                          speech_end_sample=speech_end,
                                          avg_logprob=round(res.avg_logprob, 4),
                                          no_speech_prob=round(res.no_speech_prob, 4),
                                          language=res.language or "", words=words,
                                          last=last))
        self.prev_text = text
        self.finals_emitted += 1

    def _reset_utterance(self) -> None:
        if self.spec is not None:
            self._drop_speculation()
        self.mel.reset()
        self.n_audio = 0
        self.n_raw = 0
        self.since_partial = 0
        self.prev_words = []
        self.stable = []

    def _cut_long(self, io: NodeIO, u: _Utterance) -> None:
        """The utterance reached max_window_s while speech goes on: finalise the audio up to its
        quietest point in the last few seconds (:func:`quiet_cut`) and carry the rest into a new
        utterance. The final is decoded from exactly the audio before the cut, so every word
        spoken there is in its input, and nothing after the cut is dropped. (Cutting at a word
        boundary of the window's own hypothesis lost words: when Whisper stops early, the
        alignment crowds its last words at the end of the window, and the audio of the words
        it left out fell before the cut.)"""
        n = self.n_audio
        cut = quiet_cut(self.audio[:n], RATE)
        rest = self.audio[cut:n].copy()
        self._decode_and_emit(io, u.start, cut, cut, last=False)
        self._reset_utterance()
        u.start += cut
        u.received -= cut
        u.cut += cut
        self.audio[: len(rest)] = rest
        self.n_audio = len(rest)
        self._push_mel(rest)

    def _decode_and_emit(self, io: NodeIO, start: int, n: int, speech_end: int,
                         last: bool = True) -> None:
        """Final for ``audio[:n]`` (the utterance starts at absolute sample ``start``): its
        log-mel computed afresh (the incremental frames near ``n`` saw later samples too)."""
        self.mel.reset()
        self.n_raw = 0
        self._push_mel(self.audio[:n])
        res = self._decode_utterance(self.mel.finish(), n)
        self._emit_final(io, res, start, start + n, start + speech_end, last)

    def flush(self, io: NodeIO) -> None:
        self._finish_complete(io)
        while self.utts:  # stream ended while speaking: finalise what we have
            self._final(io, self.utts[0])

    def reset(self) -> None:
        self.utts.clear()
        self._reset_utterance()

    def close(self) -> None:
        """Release the model (its onnxruntime sessions hold a few hundred MB)."""
        self.model = None  # type: ignore[assignment]

    def stats(self) -> dict:
        ms = self.final_ms
        return {"decode_s": round(self.decode_s, 3), "speech_s": round(self.audio_s, 3),
                "rtf": round(self.decode_s / self.audio_s, 4) if self.audio_s else 0.0,
                "partials": self.partials_emitted, "partials_skipped": self.partials_skipped,
                "partials_unsure": self.partials_unsure,
                "finals": self.finals_emitted, "finals_dropped": self.finals_dropped,
                "fallbacks_30s": self.fallbacks, "rechecks_30s": self.rechecks,
                "finals_split": self.final_splits,
                # the end of an utterance reached -> its final emitted (decode on the critical
                # path; about 0 when the speculative final was used)
                "final_ms_p50": round(float(np.median(ms)), 1) if ms else 0.0,
                "final_ms_max": round(max(ms), 1) if ms else 0.0,
                "speculative_decodes": self.spec_decodes, "speculative_used": self.spec_used,
                "speculative_wasted": self.spec_wasted}
