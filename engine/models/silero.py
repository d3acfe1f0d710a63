"""Silero VAD (v5/v6 ONNX) run by onnxruntime: one speech probability per window.

The streaming contract is Silero's own (``OnnxWrapper`` in the silero-vad package):

* 16 kHz: windows of 512 samples, each fed with the previous 64 samples prepended (input shape
  ``(1, 576)``); 8 kHz: 256 samples with 32 of context (``(1, 288)``). The context of the first
  window is zeros.
* ``state`` (``(2, 1, 128)`` float32, the LSTM's h and c) is carried from one window to the next
  and zeroed by :meth:`SileroModel.reset`; ``sr`` is a scalar int64.

The session runs with one intra-op and one inter-op thread, sequential execution, full graph
optimisation: the model is small enough that threading only adds wake-up latency.

Real-time rules: :meth:`SileroModel.__call__` does one ``session.run`` (onnxruntime releases the
GIL while it runs; about 70 us per window on one core) and allocates only what onnxruntime
returns (a 1 KiB state). Loading (:meth:`SileroModel.__init__`) reads and verifies the file and
must happen in ``prepare``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError
from .manifest import fetch_hint, model_file

MODEL = "silero-vad"
FILE = "silero_vad.onnx"

#: sample rate -> (window, context)
WINDOWS: dict[int, tuple[int, int]] = {16000: (512, 64), 8000: (256, 32)}


def load_session(path: Path, model: str = MODEL):
    """An onnxruntime CPU session (1 intra-op thread, 1 inter-op thread) or a ModelError."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model '{model}' file {path} could not be loaded by onnxruntime "
                         f"({first}); it may be corrupt: delete it and {fetch_hint(model)}"
                         ) from None


class SileroModel:
    """Silero VAD at 16 or 8 kHz. ``model(x)`` with ``x`` of ``context + window`` float32 samples
    (the window with its context in front) returns the speech probability of the window."""

    def __init__(self, sample_rate: int = 16000, path: Path | str | None = None):
        if sample_rate not in WINDOWS:
            raise ValueError(f"Silero VAD runs at 16000 or 8000 Hz, not {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.window, self.context = WINDOWS[self.sample_rate]
        self.path = Path(path) if path is not None else model_file(MODEL, FILE)
        self.session = load_session(self.path)
        self._check_signature()
        self._state = np.zeros((2, 1, 128), np.float32)
        self._sr = np.array(self.sample_rate, np.int64)
        self._feed = {"input": None, "state": self._state, "sr": self._sr}
        self.windows = 0

    def _check_signature(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        if set(ins) != {"input", "state", "sr"} or outs[:2] != ["output", "stateN"]:
            raise ModelError(
                f"{self.path} is not a Silero VAD v5/v6 model (inputs {sorted(ins)}, outputs "
                f"{outs}; expected inputs input/state/sr and outputs output/stateN): "
                f"delete it and {fetch_hint(MODEL)}")

    def reset(self) -> None:
        """Zero the recurrent state (a new, unrelated stream follows)."""
        self._state = np.zeros((2, 1, 128), np.float32)
        self._feed["state"] = self._state

    def __call__(self, x: np.ndarray) -> float:
        """Probability that the window (last ``window`` samples of ``x``) contains speech."""
        feed = self._feed
        feed["input"] = x.reshape(1, -1)
        out, state = self.session.run(None, feed)
        feed["state"] = state
        self.windows += 1
        return float(out[0, 0])

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Offline helper: probabilities of consecutive windows of a 1-D ``audio`` (the last
        window zero-padded), from a fresh state. Same result as streaming the audio."""
        self.reset()
        w, c = self.window, self.context
        n = -(-len(audio) // w)
        buf = np.zeros(c + n * w, np.float32)
        buf[c:c + len(audio)] = audio
        return np.array([self(buf[i * w:i * w + c + w]) for i in range(n)], np.float32)
