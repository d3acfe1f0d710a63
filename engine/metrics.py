"""Text metrics for recognisers: the usual normalisation and word error rate.

Reference transcripts differ by source (LibriSpeech upper case without punctuation, LJ Speech with
punctuation and spelled-out numbers), so both sides are normalised the usual way before scoring:
lower case, numbers spelled out, punctuation dropped (hyphens become spaces), a few spelling
aliases unified, spaces collapsed.
"""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ALIASES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "counseled": "counselled",
            "dishonored": "dishonoured", "ok": "okay"}


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _TENS[t] + ("" if o == 0 else " " + _ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return _ONES[h] + " hundred" + ("" if r == 0 else " " + _number_words(r))
    if 1100 <= n <= 1999 and n % 100 != 0:  # years: 1813 -> eighteen thirteen
        hi, lo = divmod(n, 100)
        return _number_words(hi) + " " + (("oh " + _ONES[lo]) if lo < 10 else _number_words(lo))
    if n < 1_000_000:
        th, r = divmod(n, 1000)
        return _number_words(th) + " thousand" + ("" if r == 0 else " " + _number_words(r))
    return " ".join(_ONES[int(c)] for c in str(n))


def normalize(text: str) -> str:
    """Lowercase, spell out numbers, drop punctuation (hyphens become spaces), collapse spaces."""
    t = text.lower().replace("-", " ")
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", t)
    t = re.sub(r"[^\w\s']", " ", t).replace("'", "")
    words = [_ALIASES.get(w, w) for w in t.split()]
    return " ".join(words)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(hyp)]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER in percent over normalised texts."""
    errs = words = 0
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = normalize(r).split(), normalize(h).split()
        errs += edit_distance(rw, hw)
        words += len(rw)
    return 100.0 * errs / max(words, 1)


