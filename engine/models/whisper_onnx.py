"""Whisper in onnxruntime: encoder on the real input length, greedy decoding with a KV cache.

Uses the folder written by :func:`engine.models.whisper_convert.convert_whisper` (verified
against its ``checksums.json`` on load). Decoding follows faster-whisper / openai-whisper with
``beam_size=1``, temperature 0:

* prompt: ``[<|startofprev|>, *previous_text_tokens]`` (optional), then the SOT sequence
  (``<|startoftranscript|>``, plus ``<|lang|>`` and ``<|transcribe|>``/``<|translate|>`` for
  multilingual models) and ``<|notimestamps|>`` unless timestamps are wanted;
* ``no_speech_prob``: softmax probability of ``<|nocaptions|>``/``<|nospeech|>`` in the raw
  logits at the SOT position; the language is detected from the same logits when not given;
* each step: blank suppression at the first step (``suppress_ids_begin``: " " and EOT), the
  model's ``suppress_ids`` (non-speech symbols and special tokens), openai's timestamp rules
  when timestamps are on (pairs, monotonic, first token a timestamp <= 1.0 s, timestamp forced
  when the timestamp mass beats every text token), then argmax;
* ``avg_logprob`` = sum of the chosen tokens' log-probabilities (EOT included) /
  (tokens + 1); ``compression_ratio`` = UTF-8 length / zlib length of the text.

Word timestamps (optional): one extra decoder pass over ``[SOT sequence, <|notimestamps|>,
text tokens, EOT]`` gives the cross-attention of the alignment heads; it is normalised per head,
median-filtered (width 7), averaged, and aligned to the audio frames with DTW as openai-whisper
does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .whisper_convert import load_converted

SAMPLE_RATE = 16000
HOP = 160
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # mel frames per second
TIME_PRECISION = 0.02  # seconds per timestamp token / encoder frame
MAX_INITIAL_TIMESTAMP = 1.0
TRIM_TAIL_S = 3.0  # zero mel appended after the audio for the trimmed encoder
TOKENS_PER_SECOND = 10.0  # token budget of a trimmed-encoder decode (then 30 s fallback)
COMPRESSION_RATIO_LIMIT = 2.4


@dataclass
class EncoderOutput:
    """Encoder result for one window: cross-attention keys/values per decoder layer."""

    cross_k: list[np.ndarray]
    cross_v: list[np.ndarray]
    n_frames: int  # encoder positions (ceil(mel frames / 2))
    content_frames: int  # encoder positions that hold real audio (< n_frames when padded)
    encoder_out: np.ndarray | None = None


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class DecodeResult:
    """Greedy decoding result of one window."""

    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    language: str
    language_prob: float = 1.0
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    words: list[Word] | None = None
    token_logprobs: list[float] = field(default_factory=list)
    stop_reason: str = "eot"  # "eot", "max_tokens" or "repetition"
    fallback: bool = False  # transcribe(): trimmed encoder result replaced by the 30 s one


def compression_ratio(text: str) -> float:
    """UTF-8 length / zlib-compressed length (openai-whisper's repetition measure)."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


def is_repeating(tokens: list[int], max_period: int = 32) -> bool:
    """True when ``tokens`` ends in a loop: a period-``p`` pattern repeated at least 3 times
    covering >= 12 tokens, or repeated at least 6 times (e.g. "down down down down down down")."""
    n = len(tokens)
    last = tokens[-1] if n else None
    for p in range(1, min(max_period, n // 3) + 1):
        if tokens[-1 - p] != last:
            continue
        reps = 1
        while n - (reps + 1) * p >= 0 and tokens[n - (reps + 1) * p:n - reps * p] == tokens[
                n - p:]:
            reps += 1
        if (reps >= 3 and p * reps >= 12) or reps >= 6:
            return True
    return False


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x)
    y = x - m
    return y - np.log(np.sum(np.exp(y)))


def _median_filter_rows(x: np.ndarray, width: int) -> np.ndarray:
    """Median filter along the last axis with reflect padding (openai-whisper's median_filter)."""
    if width <= 1 or x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(xp, width, axis=-1)
    return np.median(win, axis=-1)


def _dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai-whisper's DTW (steps: diagonal, up, left); returns (text_indices, time_indices)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    acc[0, 0] = 0.0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            acc[i, j] = cost[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.array(path)
    return arr[:, 0], arr[:, 1]


PREPEND_PUNCTUATIONS = "\"'\u201c\u00bf([{-"
APPEND_PUNCTUATIONS = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001"


def _merge_punctuations(items: list[dict]) -> None:
    """openai-whisper's merge: leading quotes/brackets join the next word, trailing punctuation
    the previous one (which keeps its own times)."""
    i, j = len(items) - 2, len(items) - 1
    while i >= 0:
        prev, nxt = items[i], items[j]
        if prev["word"].startswith(" ") and prev["word"].strip() in PREPEND_PUNCTUATIONS:
            nxt["word"] = prev["word"] + nxt["word"]
            nxt["tokens"] = prev["tokens"] + nxt["tokens"]
            nxt["probs"] = prev["probs"] + nxt["probs"]
            prev["word"], prev["tokens"], prev["probs"] = "", [], []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(items):
        prev, nxt = items[i], items[j]
        if not prev["word"].endswith(" ") and nxt["word"] in APPEND_PUNCTUATIONS:
            prev["word"] += nxt["word"]
            prev["tokens"] += nxt["tokens"]
            prev["probs"] += nxt["probs"]
            nxt["word"], nxt["tokens"], nxt["probs"] = "", [], []
        else:
            i = j
        j += 1


class WhisperOnnx:
    """A converted Whisper model in onnxruntime (``folder`` from ``convert_whisper``)."""

    def __init__(self, folder: str | Path, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.meta = load_converted(self.folder)
        self.dims = self.meta["dims"]
        tok = self.meta["tokens"]
        self.eot: int = tok["eot"]
        self.sot: int = tok["sot"]
        self.sot_prev: int = tok["sot_prev"]
        self.transcribe_id: int = tok["transcribe"]
        self.translate_id: int = tok["translate"]
        self.no_speech: int = tok["no_speech"]
        self.no_timestamps: int = tok["no_timestamps"]
        self.timestamp_begin: int = tok["timestamp_begin"]
        self.multilingual: bool = bool(tok["multilingual"])
        self.languages: dict[str, int] = dict(tok["languages"]) if self.multilingual else {}
        self._lang_by_id = {i: c for c, i in self.languages.items()}
        self.suppress_ids = np.array(sorted(set(self.meta["suppress_ids"])), dtype=np.int64)
        self.suppress_ids_begin = np.array(self.meta["suppress_ids_begin"], dtype=np.int64)
        self.n_layers: int = self.dims["n_text_layer"]
        self.n_heads: int = self.dims["n_text_head"]
        self.dh: int = self.dims["d_model"] // self.n_heads
        self.n_mels: int = self.dims["n_mels"]
        self.n_text_ctx: int = self.dims["n_text_ctx"]
        self.max_mel_frames: int = int(self.meta.get("max_mel_frames", 3000))
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        prov = ["CPUExecutionProvider"]
        try:
            self.encoder = ort.InferenceSession(str(self.folder / "encoder.onnx"), so,
                                                providers=prov)
            self.decoder = ort.InferenceSession(str(self.folder / "decoder.onnx"), so,
                                                providers=prov)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load the Whisper model in {self.folder}: {e}"
                             ) from None
        self._dec_outputs = ["logits"] + [f"present_{kv}_{i}" for i in range(self.n_layers)
                                          for kv in ("k", "v")]

    # -- tokens ---------------------------------------------------------------------------------

    def decode_tokens(self, tokens: list[int]) -> str:
        """Text of the tokens below EOT (timestamps and special tokens dropped)."""
        return self.tokenizer.decode([t for t in tokens if t < self.eot])

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def sot_sequence(self, language: str | None = "en", task: str = "transcribe") -> list[int]:
        """``[<|startoftranscript|>]`` (+ ``<|lang|>``, task token for multilingual models)."""
        if not self.multilingual:
            return [self.sot]
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
        seq = [self.sot]
        if language is not None:
            seq.append(self.language_token(language))
        seq.append(self.transcribe_id if task == "transcribe" else self.translate_id)
        return seq

    def language_token(self, language: str) -> int:
        if language not in self.languages:
            raise ValueError(f"unknown language {language!r} (known: "
                             f"{', '.join(self.languages)})")
        return self.languages[language]

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, mel: np.ndarray, content_frames: int | None = None) -> EncoderOutput:
        """Run the encoder on a normalised log-mel ``[n_mels, T]`` (T <= 3000, any length).

        ``content_frames`` (mel frames of real audio, default T) sets which encoder positions
        the word alignment may use when ``mel`` was zero-padded.
        """
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim == 3:
            mel = mel[0]
        if mel.ndim != 2 or mel.shape[0] != self.n_mels:
            raise ValueError(f"mel must be [{self.n_mels}, frames], got {mel.shape}")
        t = mel.shape[1]
        if not 1 <= t <= self.max_mel_frames:
            raise ValueError(f"mel has {t} frames; the encoder takes 1..{self.max_mel_frames}")
        outs = self.encoder.run(None, {"mel": np.ascontiguousarray(mel[None])})
        n = outs[0].shape[1]
        cf = t if content_frames is None else min(int(content_frames), t)
        return EncoderOutput(cross_k=list(outs[1::2]), cross_v=list(outs[2::2]), n_frames=n,
                             content_frames=(cf + 1) // 2, encoder_out=outs[0])

    # -- decoder --------------------------------------------------------------------------------

    def _empty_cache(self) -> list[np.ndarray]:
        cache = []
        for _ in range(self.n_layers):
            cache.append(np.zeros((1, self.n_heads, self.dh, 0), np.float32))
            cache.append(np.zeros((1, self.n_heads, 0, self.dh), np.float32))
        return cache

    def _step(self, enc: EncoderOutput, tokens: list[int], cache: list[np.ndarray],
              want_attn: bool = False) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        feed: dict[str, np.ndarray] = {"tokens": np.asarray([tokens], dtype=np.int64)}
        for i in range(self.n_layers):
            feed[f"past_k_{i}"] = cache[2 * i]
            feed[f"past_v_{i}"] = cache[2 * i + 1]
            feed[f"cross_k_{i}"] = enc.cross_k[i]
            feed[f"cross_v_{i}"] = enc.cross_v[i]
        names = self._dec_outputs + (["cross_attn"] if want_attn else [])
        outs = self.decoder.run(names, feed)
        return outs[0][0], outs[1:1 + 2 * self.n_layers], (outs[-1] if want_attn else None)

    def _language_probs(self, sot_logits: np.ndarray) -> list[tuple[str, float]]:
        ids = np.array(list(self.languages.values()), dtype=np.int64)
        lp = _log_softmax(sot_logits[ids].astype(np.float64))
        p = np.exp(lp)
        order = np.argsort(-p)
        codes = list(self.languages)
        return [(codes[i], float(p[i])) for i in order]

    def detect_language(self, enc: EncoderOutput) -> list[tuple[str, float]]:
        """Language probabilities, most likely first (``[("en", 1.0)]`` for English-only)."""
        if not self.multilingual:
            return [("en", 1.0)]
        logits, _, _ = self._step(enc, [self.sot], self._empty_cache())
        return self._language_probs(logits)

    def _apply_timestamp_rules(self, logits: np.ndarray, sampled: list[int],
                               max_initial_index: int | None) -> None:
        tb = self.timestamp_begin
        logits[self.no_timestamps] = -np.inf
        last_ts = len(sampled) >= 1 and sampled[-1] >= tb
        penult_ts = len(sampled) < 2 or sampled[-2] >= tb
        if last_ts:
            if penult_ts:
                logits[tb:] = -np.inf
            else:
                logits[:self.eot] = -np.inf
        ts = [t for t in sampled if t >= tb]
        if ts:
            ts_last = ts[-1] if (last_ts and not penult_ts) else ts[-1] + 1
            logits[tb:ts_last] = -np.inf
        if not sampled:
            logits[:tb] = -np.inf
            if max_initial_index is not None:
                logits[tb + max_initial_index + 1:] = -np.inf
        lp = _log_softmax(logits.astype(np.float64))
        ts_lp = lp[tb:]
        finite = ts_lp[np.isfinite(ts_lp)]
        if finite.size:
            mx = finite.max()
            ts_logprob = mx + np.log(np.sum(np.exp(finite - mx)))
            if ts_logprob > lp[:tb].max():
                logits[:tb] = -np.inf

    def decode(self, enc: EncoderOutput, language: str | None = "en", task: str = "transcribe",
               with_timestamps: bool = False, prompt: str | list[int] | None = None,
               max_tokens: int = 224, suppress_blank: bool = True,
               word_timestamps: bool = False, stop_on_repetition: bool = False) -> DecodeResult:
        """Greedy (temperature 0) decoding of one encoded window.

        ``stop_on_repetition`` ends decoding as soon as the output loops (:func:`is_repeating`);
        faster-whisper has no such rule, so it is off for faithful decoding.
        """
        pre: list[int] = []
        if prompt:
            ptoks = self.encode_text(" " + prompt.strip()) if isinstance(prompt, str) else [
                int(t) for t in prompt]
            pre = [self.sot_prev] + ptoks[-(self.n_text_ctx // 2 - 1):]
        cache = self._empty_cache()
        # 1) everything up to and including SOT: no-speech probability and language
        sot_logits, cache, _ = self._step(enc, pre + [self.sot], cache)
        p = np.exp(_log_softmax(sot_logits.astype(np.float64)))
        no_speech_prob = float(p[self.no_speech])
        lang_prob = 1.0
        if not self.multilingual:
            language = "en"
        else:
            probs = self._language_probs(sot_logits)
            if language is None:
                language, lang_prob = probs[0]
            else:
                self.language_token(language)  # validates the code
                lang_prob = dict(probs)[language]
        rest = self.sot_sequence(language, task)[1:]
        if not with_timestamps:
            rest.append(self.no_timestamps)
        # 2) the rest of the prompt
        if rest:
            logits, cache, _ = self._step(enc, rest, cache)
        else:
            logits = sot_logits
        n_prompt = len(pre) + 1 + len(rest)
        limit = max(0, min(int(max_tokens), self.n_text_ctx - n_prompt))
        max_initial = int(round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION))
        tokens: list[int] = []
        sum_logprob = 0.0
        token_logprobs: list[float] = []
        stop = "eot"
        while True:
            lg = np.array(logits, dtype=np.float32)  # a writable copy
            if suppress_blank and not tokens and self.suppress_ids_begin.size:
                lg[self.suppress_ids_begin] = -np.inf
            if self.suppress_ids.size:
                lg[self.suppress_ids] = -np.inf
            if with_timestamps:
                self._apply_timestamp_rules(lg, tokens, max_initial)
            tok = int(np.argmax(lg))
            top = float(lg[tok])
            lp = -float(np.log(np.sum(np.exp(lg - np.float32(top)), dtype=np.float64)))
            sum_logprob += lp
            if tok == self.eot:
                break
            if len(tokens) >= limit:
                sum_logprob -= lp  # length limit: the last token is not part of the output
                stop = "max_tokens"
                break
            tokens.append(tok)
            token_logprobs.append(lp)
            if stop_on_repetition and is_repeating(tokens):
                stop = "repetition"
                break
            if len(tokens) >= limit:
                stop = "max_tokens"
                break
            logits, cache, _ = self._step(enc, [tok], cache)
        text = self.decode_tokens(tokens).strip()
        result = DecodeResult(
            tokens=tokens, text=text, avg_logprob=sum_logprob / (len(tokens) + 1),
            no_speech_prob=no_speech_prob, compression_ratio=compression_ratio(text),
            language=language or "en", language_prob=lang_prob,
            segments=self._segments(tokens, enc) if with_timestamps else [],
            token_logprobs=token_logprobs, stop_reason=stop,
        )
        if word_timestamps:
            result.words = self.align_words(enc, tokens, language, task,
                                            token_logprobs=token_logprobs)
        return result

    def _segments(self, tokens: list[int], enc: EncoderOutput) -> list[tuple[float, float, str]]:
        tb = self.timestamp_begin
        segs: list[tuple[float, float, str]] = []
        start: float | None = None
        cur: list[int] = []
        for t in tokens:
            if t >= tb:
                ts = (t - tb) * TIME_PRECISION
                if start is None:
                    start = ts
                elif cur:
                    segs.append((start, ts, self.decode_tokens(cur).strip()))
                    cur, start = [], None
                else:
                    start = ts
            else:
                cur.append(t)
        if cur:
            end = enc.content_frames * TIME_PRECISION
            segs.append((start if start is not None else 0.0, end,
                         self.decode_tokens(cur).strip()))
        return segs

    # -- word timestamps ------------------------------------------------------------------------

    def _split_words(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Split text tokens (+ EOT) into words at spaces / punctuation (openai's English rule)."""
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        for t in tokens:
            current.append(t)
            s = self.decode_tokens(current)
            if "\ufffd" not in s or t >= self.eot:
                words.append(s)
                word_tokens.append(current)
                current = []
        merged_w: list[str] = []
        merged_t: list[list[int]] = []
        punct = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        for w, toks in zip(words, word_tokens, strict=True):
            special = toks[0] >= self.eot
            with_space = w.startswith(" ")
            is_punct = w.strip() in punct
            if special or with_space or is_punct or not merged_w:
                merged_w.append(w)
                merged_t.append(list(toks))
            else:
                merged_w[-1] += w
                merged_t[-1].extend(toks)
        return merged_w, merged_t

    def align_words(self, enc: EncoderOutput, tokens: list[int], language: str | None = "en",
                    task: str = "transcribe", medfilt_width: int = 7,
                    token_logprobs: list[float] | None = None) -> list[Word]:
        """Word start/end times from the alignment heads' cross-attention (DTW).

        Punctuation is merged into the neighbouring word as openai-whisper does; a word's
        ``probability`` is the mean probability of its tokens when ``token_logprobs`` (one per
        entry of ``tokens``) is given, else 1.0.
        """
        probs = {}
        if token_logprobs is not None and len(token_logprobs) == len(tokens):
            probs = {i: float(np.exp(lp)) for i, lp in enumerate(token_logprobs)}
        text_pos = [i for i, t in enumerate(tokens) if t < self.eot]
        text_probs = [probs.get(i, 1.0) for i in text_pos]
        text_tokens = [tokens[i] for i in text_pos]
        if not text_tokens or not self.meta["alignment_heads"]:
            return []
        sot_seq = self.sot_sequence(language, task)
        seq = sot_seq + [self.no_timestamps] + text_tokens + [self.eot]
        # token probabilities and attention in one pass over the whole sequence
        _, _, attn = self._step(enc, seq, self._empty_cache(), want_attn=True)
        w = attn[0][:, :, :max(1, enc.content_frames)].astype(np.float64)  # [A, n, S']
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
        mean = w.mean(axis=-2, keepdims=True)
        std = w.std(axis=-2, keepdims=True)
        w = (w - mean) / np.maximum(std, 1e-12)
        w = _median_filter_rows(w, medfilt_width)
        matrix = w.mean(axis=0)[len(sot_seq):-1]  # rows predicting text tokens and EOT
        text_idx, time_idx = _dtw(-matrix)
        words, word_tokens = self._split_words(text_tokens + [self.eot])
        if len(word_tokens) <= 1:
            return []
        boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] * TIME_PRECISION
        starts = jump_times[boundaries[:-1]]
        ends = jump_times[boundaries[1:]]
        items: list[dict] = []
        k = 0
        for word, toks, st, en in zip(words[:-1], word_tokens[:-1], starts, ends, strict=True):
            p = text_probs[k:k + len(toks)]
            k += len(toks)
            items.append({"word": word, "tokens": list(toks), "start": float(st),
                          "end": float(en), "probs": p})
        _merge_punctuations(items)
        return [Word(word=it["word"], start=round(it["start"], 2), end=round(it["end"], 2),
                     probability=float(np.mean(it["probs"])) if it["probs"] else 1.0)
                for it in items if it["word"].strip()]

    # -- convenience ----------------------------------------------------------------------------

    def transcribe(self, audio16k: np.ndarray, language: str | None = "en",
                   task: str = "transcribe", pad_to_30s: bool = False,
                   with_timestamps: bool = False, word_timestamps: bool = False,
                   prompt: str | list[int] | None = None, max_tokens: int = 224,
                   tail_s: float = TRIM_TAIL_S) -> DecodeResult:
        """Mel, encoder and greedy decoding of <= 30 s of 16 kHz audio.

        ``pad_to_30s=True`` zero-pads the mel to 3000 frames as faster-whisper does (same text
        as faster-whisper). ``pad_to_30s=False`` runs the encoder on the real length plus
        ``tail_s`` seconds of zero mel (capped at 30 s), which is much cheaper for short
        utterances; but the model was trained on 30 s windows and on a trimmed window it
        sometimes never emits end-of-text and loops. So the trimmed decode stops on repetition,
        on a budget of ``TOKENS_PER_SECOND`` tokens per second of audio, or on a compression
        ratio above 2.4, and then falls back to the 30 s window (``result.fallback``).
        """
        from ..dsp.whisper_mel import log_mel_spectrogram

        audio = np.asarray(audio16k, dtype=np.float32).ravel()
        n_content = audio.shape[0] // HOP
        if n_content > self.max_mel_frames:
            raise ValueError(f"audio is {audio.shape[0] / SAMPLE_RATE:.1f} s; transcribe() takes "
                             "at most 30 s (split longer audio, e.g. at pauses, first)")
        if n_content == 0:
            return DecodeResult(tokens=[], text="", avg_logprob=0.0, no_speech_prob=1.0,
                                compression_ratio=0.0, language=language or "en")
        mel = log_mel_spectrogram(audio, self.n_mels)[:, :n_content]
        kw = dict(language=language, task=task, with_timestamps=with_timestamps, prompt=prompt,
                  word_timestamps=word_timestamps)
        if not pad_to_30s:
            total = min(self.max_mel_frames,
                        n_content + int(round(tail_s * FRAMES_PER_SECOND)))
            budget = int(TOKENS_PER_SECOND * n_content / FRAMES_PER_SECOND) + 10
            enc = self.encode(np.pad(mel, ((0, 0), (0, total - n_content))),
                              content_frames=n_content)
            res = self.decode(enc, max_tokens=min(max_tokens, budget), stop_on_repetition=True,
                              **kw)
            own_limit = res.stop_reason == "max_tokens" and budget >= max_tokens
            if (res.stop_reason == "eot" or own_limit) and (
                    res.compression_ratio <= COMPRESSION_RATIO_LIMIT):
                return res
        padded = np.pad(mel, ((0, 0), (0, self.max_mel_frames - n_content)))
        res = self.decode(self.encode(padded, content_frames=n_content), max_tokens=max_tokens,
                          **kw)
        res.fallback = not pad_to_30s
        return res
