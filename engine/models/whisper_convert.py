"""Convert a CTranslate2 (faster-whisper) Whisper model to ONNX, without torch.

Output folder (for manifest models ``models_onnx/NAME/``, next to the ``ct2/`` sources)::

    encoder.onnx     mel [B, n_mels, T] (T <= 3000, any length) ->
                       encoder_out [B, S, d]               S = ceil(T / 2)
                       cross_k_{l} [B, H, dh, S]           per decoder layer l (keys, transposed)
                       cross_v_{l} [B, H, S, dh]           per decoder layer l (values)
    decoder.onnx     one decoder step over n new tokens:
                       tokens [B, n] int64,
                       past_k_{l} [B, H, dh, P], past_v_{l} [B, H, P, dh]  (P = tokens so far;
                       P = 0 at the start), cross_k_{l}, cross_v_{l} from the encoder ->
                       logits [B, V] (last position only), present_k_{l} [B, H, dh, P + n],
                       present_v_{l} [B, H, P + n, dh],
                       cross_attn [B, A, n, S] (softmaxed cross-attention of the A alignment
                       heads of ``config.json``, for word timestamps)
    whisper.json     dimensions, special token ids and suppression lists used by the runtime
    config.json, tokenizer.json, vocabulary.txt   copied from the CTranslate2 folder
    checksums.json   {"files": {name: sha256}} of every file above

Cross-attention keys/values are folded into the encoder: they depend only on the encoder output,
so they are computed once per window there (no separate ``cross_kv.onnx``).

The encoder is trimmed to the real input length (whisper.cpp's ``audio_ctx``): the positional
embedding is sliced to ``S`` rows, so a 3 s utterance runs a 150-position encoder instead of the
1500 positions of a zero-padded 30 s window. Passing a 3000-frame mel reproduces the padded
behaviour exactly.

Weights are float32 (float16 and int8 CTranslate2 weights are widened); the attention scale
``1/sqrt(dh)`` is folded into the query projections. ``quantize="int8"`` applies onnxruntime's
dynamic int8 quantisation to the weight matrix products (``MatMul``/``Gemm`` with constant
weights). The loader (:func:`load_converted`) refuses a folder whose files do not match
``checksums.json`` with a :class:`~engine.errors.ModelError` that names the fix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .manifest import load_manifest, models_dir, sha256_file, verify_file
from .whisper_ct2 import dequantize, read_ct2_whisper

ONNX_OPSET = 17
MAX_MEL_FRAMES = 3000
COPIED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MODEL_FILES = ("encoder.onnx", "decoder.onnx", "whisper.json")
FORMAT_VERSION = 1
LN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# graph building helper


class _Graph:
    """Collects nodes and initializers; ``op`` returns the output name(s)."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._names: set[str] = set()
        self._n = 0

    def _fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, name: str, arr: np.ndarray) -> str:
        if name in self._names:
            return name
        self._names.add(name)
        arr = np.asarray(arr)
        self.inits.append(self.numpy_helper.from_array(
            np.ascontiguousarray(arr) if arr.ndim else arr.copy(), name))
        return name

    def i64(self, values: list[int] | int) -> str:
        arr = np.asarray(values, dtype=np.int64)
        key = "c_i64_" + "_".join(str(v).replace("-", "m") for v in arr.ravel()) + (
            "_s" if arr.ndim == 0 else "")
        return self.const(key, arr)

    def f32(self, value: float) -> str:
        key = "c_f32_" + repr(float(value)).replace(".", "p").replace("-", "m")
        return self.const(key, np.asarray(value, dtype=np.float32))

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None,
           outputs: list[str] | None = None, **attrs) -> str | list[str]:
        node_name = name or self._fresh(op_type)
        outs = outputs or [f"{node_name}_out{i}" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0] if len(outs) == 1 else outs

    # composite layers -------------------------------------------------------------------------

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, name: str) -> str:
        """``x @ w.T + b`` with ``w`` [out, in] (CTranslate2 layout); weights stored [in, out]."""
        wt = self.const(name + ".weight", np.ascontiguousarray(w.T.astype(np.float32)))
        y = self.op("MatMul", [x, wt], name=name + "/MatMul")
        if b is not None:
            y = self.op("Add", [y, self.const(name + ".bias", b.astype(np.float32))],
                        name=name + "/Add")
        return y

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, name: str) -> str:
        return self.op("LayerNormalization",
                       [x, self.const(name + ".gamma", gamma.astype(np.float32)),
                        self.const(name + ".beta", beta.astype(np.float32))],
                       name=name, axis=-1, epsilon=LN_EPS)

    def gelu(self, x: str) -> str:
        """Exact (erf) GELU written so that onnxruntime fuses it into its Gelu kernel."""
        d = self.op("Div", [x, self.f32(math.sqrt(2.0))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.f32(1.0)])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.f32(0.5)])

    def heads(self, x: str, n_heads: int, dh: int, perm: list[int]) -> str:
        """[B, S, H*dh] -> [B, S, H, dh] -> transpose ``perm``."""
        r = self.op("Reshape", [x, self.i64([0, 0, n_heads, dh])])
        return self.op("Transpose", [r], perm=perm)

    def merge_heads(self, ctx: str) -> str:
        """[B, H, S, dh] -> [B, S, H*dh]."""
        t = self.op("Transpose", [ctx], perm=[0, 2, 1, 3])
        return self.op("Reshape", [t, self.i64([0, 0, -1])])


def _w(v: dict[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return dequantize(v, name)
    except KeyError:
        raise ModelError(f"CTranslate2 Whisper model lacks variable {name!r}; is it a Whisper "
                         "model converted by ct2-transformers-converter?") from None


def _opt(v: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    return dequantize(v, name) if name in v else None


def _count_layers(v: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def _dims(v: dict[str, np.ndarray]) -> dict:
    d_model = int(v["encoder/conv1/weight"].shape[0])
    n_mels = int(v["encoder/conv1/weight"].shape[1])
    enc_heads = int(np.asarray(v["encoder/num_heads"]).item())
    dec_heads = int(np.asarray(v["decoder/num_heads"]).item())
    return {
        "d_model": d_model,
        "n_mels": n_mels,
        "n_audio_layer": _count_layers(v, "encoder"),
        "n_audio_head": enc_heads,
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_text_layer": _count_layers(v, "decoder"),
        "n_text_head": dec_heads,
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
    }


# ---------------------------------------------------------------------------------------------
# encoder


def _self_attention_qkv(g: _Graph, v: dict, p: str, h: str, d: int, n_heads: int
                        ) -> tuple[str, str, str]:
    """Fused QKV projection of ``p/linear_0``; q pre-scaled by 1/sqrt(dh)."""
    dh = d // n_heads
    w = _w(v, p + "/linear_0/weight").copy()
    b = _opt(v, p + "/linear_0/bias")
    b = np.zeros(3 * d, np.float32) if b is None else b.copy()
    scale = 1.0 / math.sqrt(dh)
    w[:d] *= scale
    b[:d] *= scale
    qkv = g.linear(h, w, b, p + "/linear_0")
    q, k, vv = g.op("Split", [qkv, g.i64([d, d, d])], n_out=3, axis=-1)
    return q, k, vv


def _build_encoder(v: dict, dims: dict, alignment: list) -> object:
    from onnx import TensorProto, helper

    g = _Graph()
    d, n_heads = dims["d_model"], dims["n_audio_head"]
    dh = d // n_heads
    mel = "mel"
    c1 = g.op("Conv", [mel, g.const("conv1.weight", _w(v, "encoder/conv1/weight")),
                       g.const("conv1.bias", _w(v, "encoder/conv1/bias"))],
              name="conv1", kernel_shape=[3], pads=[1, 1])
    c1 = g.gelu(c1)
    c2 = g.op("Conv", [c1, g.const("conv2.weight", _w(v, "encoder/conv2/weight")),
                       g.const("conv2.bias", _w(v, "encoder/conv2/bias"))],
              name="conv2", kernel_shape=[3], pads=[1, 1], strides=[2])
    c2 = g.gelu(c2)
    x = g.op("Transpose", [c2], perm=[0, 2, 1])  # [B, S, d]
    s_len = g.op("Shape", [x], start=1, end=2)
    pos = g.op("Slice", [g.const("encoder.pos", _w(v, "encoder/position_encodings/encodings")),
                         g.i64([0]), s_len, g.i64([0])])
    x = g.op("Add", [x, pos])
    for i in range(dims["n_audio_layer"]):
        p = f"encoder/layer_{i}"
        h = g.layer_norm(x, _w(v, p + "/self_attention/layer_norm/gamma"),
                         _w(v, p + "/self_attention/layer_norm/beta"), p + "/attn_ln")
        q, k, vv = _self_attention_qkv(g, v, p + "/self_attention", h, d, n_heads)
        q = g.heads(q, n_heads, dh, [0, 2, 1, 3])
        k = g.heads(k, n_heads, dh, [0, 2, 3, 1])
        vv = g.heads(vv, n_heads, dh, [0, 2, 1, 3])
        att = g.op("Softmax", [g.op("MatMul", [q, k])], axis=-1)
        ctx = g.merge_heads(g.op("MatMul", [att, vv]))
        o = g.linear(ctx, _w(v, p + "/self_attention/linear_1/weight"),
                     _opt(v, p + "/self_attention/linear_1/bias"), p + "/self_attention/linear_1")
        x = g.op("Add", [x, o])
        x = _ffn(g, v, p, x)
    enc = g.layer_norm(x, _w(v, "encoder/layer_norm/gamma"), _w(v, "encoder/layer_norm/beta"),
                       "encoder/ln_post")
    g.op("Identity", [enc], outputs=["encoder_out"])
    outputs = [helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT,
                                             ["batch", "enc_frames", d])]
    tdh = dims["d_model"] // dims["n_text_head"]
    for i in range(dims["n_text_layer"]):
        p = f"decoder/layer_{i}/attention"
        kv = g.linear(enc, _w(v, p + "/linear_1/weight"), _opt(v, p + "/linear_1/bias"),
                      p + "/linear_1")
        k, vv = g.op("Split", [kv, g.i64([d, d])], n_out=2, axis=-1)
        k = g.heads(k, dims["n_text_head"], tdh, [0, 2, 3, 1])
        vv = g.heads(vv, dims["n_text_head"], tdh, [0, 2, 1, 3])
        g.op("Identity", [k], outputs=[f"cross_k_{i}"])
        g.op("Identity", [vv], outputs=[f"cross_v_{i}"])
        outputs.append(helper.make_tensor_value_info(
            f"cross_k_{i}", TensorProto.FLOAT, ["batch", dims["n_text_head"], tdh, "enc_frames"]))
        outputs.append(helper.make_tensor_value_info(
            f"cross_v_{i}", TensorProto.FLOAT, ["batch", dims["n_text_head"], "enc_frames", tdh]))
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT,
                                            ["batch", dims["n_mels"], "frames"])]
    graph = helper.make_graph(g.nodes, "whisper_encoder", inputs, outputs, g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                             producer_name="audio-engine whisper_convert")


def _ffn(g: _Graph, v: dict, p: str, x: str) -> str:
    h = g.layer_norm(x, _w(v, p + "/ffn/layer_norm/gamma"), _w(v, p + "/ffn/layer_norm/beta"),
                     p + "/ffn_ln")
    h = g.linear(h, _w(v, p + "/ffn/linear_0/weight"), _opt(v, p + "/ffn/linear_0/bias"),
                 p + "/ffn/linear_0")
    h = g.gelu(h)
    h = g.linear(h, _w(v, p + "/ffn/linear_1/weight"), _opt(v, p + "/ffn/linear_1/bias"),
                 p + "/ffn/linear_1")
    return g.op("Add", [x, h])


# ---------------------------------------------------------------------------------------------
# decoder


def _build_decoder(v: dict, dims: dict, alignment: list) -> object:
    from onnx import TensorProto, helper

    g = _Graph()
    d, n_heads, n_ctx = dims["d_model"], dims["n_text_head"], dims["n_text_ctx"]
    dh = d // n_heads
    n_layers = dims["n_text_layer"]
    emb = g.const("decoder.embeddings", _w(v, "decoder/embeddings/weight"))
    past_len = g.op("Shape", ["past_v_0"], start=2, end=3)  # [P]
    n_new = g.op("Shape", ["tokens"], start=1, end=2)  # [n]
    total = g.op("Add", [past_len, n_new])  # [P + n]
    x = g.op("Gather", [emb, "tokens"], axis=0)  # [B, n, d]
    pos = g.op("Slice", [g.const("decoder.pos", _w(v, "decoder/position_encodings/encodings")),
                         past_len, total, g.i64([0])])
    x = g.op("Add", [x, pos])
    causal = np.triu(np.full((n_ctx, n_ctx), -np.inf, dtype=np.float32), k=1)
    mask = g.op("Slice", [g.const("decoder.causal_mask", causal),
                          g.op("Concat", [past_len, g.i64([0])], axis=0),
                          g.op("Concat", [total, total], axis=0), g.i64([0, 1])])  # [n, P+n]
    align_by_layer: dict[int, list[int]] = {}
    for layer, head in alignment:
        align_by_layer.setdefault(int(layer), []).append(int(head))
    align_parts: list[str] = []
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "n_tokens"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch", dims["n_vocab"]])]
    for i in range(n_layers):
        p = f"decoder/layer_{i}"
        inputs += [
            helper.make_tensor_value_info(f"past_k_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, dh, "past"]),
            helper.make_tensor_value_info(f"past_v_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, "past", dh]),
        ]
        # masked self-attention with the key/value cache
        h = g.layer_norm(x, _w(v, p + "/self_attention/layer_norm/gamma"),
                         _w(v, p + "/self_attention/layer_norm/beta"), p + "/attn_ln")
        q, k, vv = _self_attention_qkv(g, v, p + "/self_attention", h, d, n_heads)
        q = g.heads(q, n_heads, dh, [0, 2, 1, 3])
        k = g.heads(k, n_heads, dh, [0, 2, 3, 1])
        vv = g.heads(vv, n_heads, dh, [0, 2, 1, 3])
        k_all = g.op("Concat", [f"past_k_{i}", k], axis=3, outputs=[f"present_k_{i}"],
                     name=f"{p}/present_k")
        v_all = g.op("Concat", [f"past_v_{i}", vv], axis=2, outputs=[f"present_v_{i}"],
                     name=f"{p}/present_v")
        scores = g.op("Add", [g.op("MatMul", [q, k_all]), mask])
        att = g.op("Softmax", [scores], axis=-1)
        ctx = g.merge_heads(g.op("MatMul", [att, v_all]))
        o = g.linear(ctx, _w(v, p + "/self_attention/linear_1/weight"),
                     _opt(v, p + "/self_attention/linear_1/bias"), p + "/self_attention/linear_1")
        x = g.op("Add", [x, o])
        # cross-attention on the encoder's precomputed keys/values
        inputs += [
            helper.make_tensor_value_info(f"cross_k_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, dh, "enc_frames"]),
            helper.make_tensor_value_info(f"cross_v_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, "enc_frames", dh]),
        ]
        h = g.layer_norm(x, _w(v, p + "/attention/layer_norm/gamma"),
                         _w(v, p + "/attention/layer_norm/beta"), p + "/cross_ln")
        wq = _w(v, p + "/attention/linear_0/weight") / math.sqrt(dh)
        bq = _opt(v, p + "/attention/linear_0/bias")
        bq = None if bq is None else bq / math.sqrt(dh)
        q = g.heads(g.linear(h, wq, bq, p + "/attention/linear_0"), n_heads, dh, [0, 2, 1, 3])
        att = g.op("Softmax", [g.op("MatMul", [q, f"cross_k_{i}"])], axis=-1)  # [B,H,n,S]
        if i in align_by_layer:
            align_parts.append(g.op("Gather", [att, g.i64(align_by_layer[i])], axis=1))
        ctx = g.merge_heads(g.op("MatMul", [att, f"cross_v_{i}"]))
        o = g.linear(ctx, _w(v, p + "/attention/linear_2/weight"),
                     _opt(v, p + "/attention/linear_2/bias"), p + "/attention/linear_2")
        x = g.op("Add", [x, o])
        x = _ffn(g, v, p, x)
        outputs += [
            helper.make_tensor_value_info(f"present_k_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, dh, "total"]),
            helper.make_tensor_value_info(f"present_v_{i}", TensorProto.FLOAT,
                                          ["batch", n_heads, "total", dh]),
        ]
    x = g.layer_norm(x, _w(v, "decoder/layer_norm/gamma"), _w(v, "decoder/layer_norm/beta"),
                     "decoder/ln")
    last = g.op("Gather", [x, g.i64(-1)], axis=1)  # [B, d]
    proj = "decoder/projection/weight"
    if proj in v and not np.shares_memory(v[proj], v["decoder/embeddings/weight"]) and not (
            np.array_equal(v[proj], v["decoder/embeddings/weight"])):
        proj_w = g.const("decoder.projection", _w(v, proj))
    else:
        proj_w = emb  # tied embeddings (Whisper): one copy serves Gather and Gemm
    pb = _opt(v, "decoder/projection/bias")
    gemm_in = [last, proj_w] + ([g.const("decoder.projection.bias", pb)] if pb is not None else [])
    g.op("Gemm", gemm_in, outputs=["logits"], name="decoder/projection/Gemm", transB=1)
    if align_parts:
        g.op("Concat", align_parts, axis=1, outputs=["cross_attn"], name="cross_attn")
    else:  # no alignment heads: an empty [B, 0, n, S] tensor keeps the interface fixed
        g.op("Slice", [att, g.i64([0]), g.i64([0]), g.i64([1])], outputs=["cross_attn"],
             name="cross_attn")
    outputs.append(helper.make_tensor_value_info(
        "cross_attn", TensorProto.FLOAT, ["batch", len(alignment), "n_tokens", "enc_frames"]))
    graph = helper.make_graph(g.nodes, "whisper_decoder", inputs, outputs, g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                             producer_name="audio-engine whisper_convert")


# ---------------------------------------------------------------------------------------------
# tokenizer facts


def _special_tokens(tokenizer_json: Path, n_vocab: int) -> dict:
    data = json.loads(tokenizer_json.read_text())
    ids = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}

    def need(*names: str) -> int:
        for n in names:
            if n in ids:
                return ids[n]
        raise ModelError(f"{tokenizer_json}: no {' / '.join(names)} token")

    no_timestamps = need("<|notimestamps|>")
    specials = {
        "eot": need("<|endoftext|>"),
        "sot": need("<|startoftranscript|>"),
        "translate": need("<|translate|>"),
        "transcribe": need("<|transcribe|>"),
        "sot_lm": need("<|startoflm|>"),
        "sot_prev": need("<|startofprev|>"),
        "no_speech": need("<|nospeech|>", "<|nocaptions|>"),
        "no_timestamps": no_timestamps,
        "timestamp_begin": no_timestamps + 1,
    }
    # language tokens: between sot and translate, named <|xx|>
    langs = {name[2:-2]: i for name, i in ids.items()
             if specials["sot"] < i < specials["translate"] and name.startswith("<|")}
    specials["languages"] = dict(sorted(langs.items(), key=lambda kv: kv[1]))
    specials["multilingual"] = n_vocab >= 51865
    return specials


# ---------------------------------------------------------------------------------------------
# conversion


def _quantize_int8(src: Path, dst: Path, nodes: list[str]) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a "consider pre-processing" warning
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         nodes_to_quantize=nodes, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def _weight_nodes(model) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits]


def convert_whisper(ct2_dir: str | Path, out_dir: str | Path, quantize: str | None = None,
                    log: Callable[[str], object] = print) -> Path:
    """Convert the CTranslate2 Whisper model in ``ct2_dir`` to ONNX files in ``out_dir``.

    Writes ``encoder.onnx``, ``decoder.onnx``, ``whisper.json``, copies ``config.json``,
    ``tokenizer.json`` and ``vocabulary.txt``, and writes ``checksums.json`` last (a folder
    without it is an incomplete conversion). ``quantize``: ``None`` (float32) or ``"int8"``.
    Returns ``out_dir``.
    """
    import onnx

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if quantize not in (None, "int8"):
        raise ModelError(f"quantize must be None or 'int8', not {quantize!r}")
    for f in ("model.bin",) + COPIED_FILES:
        if not (ct2_dir / f).exists():
            raise ModelError(f"cannot convert {ct2_dir}: missing {f} (a faster-whisper / "
                             "CTranslate2 Whisper model folder has model.bin, config.json, "
                             "tokenizer.json and vocabulary.txt)")
    log(f"  reading {ct2_dir / 'model.bin'}")
    v, config = read_ct2_whisper(ct2_dir)
    dims = _dims(v)
    alignment = [list(map(int, a)) for a in (config.get("alignment_heads") or [])]
    specials = _special_tokens(ct2_dir / "tokenizer.json", dims["n_vocab"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "checksums.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=out_dir) as tmp:
        tmpd = Path(tmp)
        for part, builder in (("encoder", _build_encoder), ("decoder", _build_decoder)):
            log(f"  building {part}.onnx")
            model = builder(v, dims, alignment)
            onnx.checker.check_model(model)
            path = tmpd / f"{part}.onnx"
            onnx.save(model, str(path))
            if quantize == "int8":
                log(f"  quantising {part}.onnx to int8 (dynamic)")
                qpath = tmpd / f"{part}.int8.onnx"
                _quantize_int8(path, qpath, _weight_nodes(model))
                os.replace(qpath, path)
            del model
        meta = {
            "format_version": FORMAT_VERSION,
            "source": "ctranslate2",
            "source_spec": config.get("spec"),
            "source_revision": config.get("revision"),
            "source_model_sha256": sha256_file(ct2_dir / "model.bin"),
            "quantize": quantize,
            "dims": dims,
            "max_mel_frames": MAX_MEL_FRAMES,
            "alignment_heads": alignment,
            "suppress_ids": [int(i) for i in config.get("suppress_ids") or []],
            "suppress_ids_begin": [int(i) for i in config.get("suppress_ids_begin") or []],
            "lang_ids": [int(i) for i in config.get("lang_ids") or []],
            "tokens": specials,
        }
        (tmpd / "whisper.json").write_text(json.dumps(meta, indent=1) + "\n")
        for f in COPIED_FILES:
            shutil.copyfile(ct2_dir / f, tmpd / f)
        sums = {}
        for f in MODEL_FILES + COPIED_FILES:
            sums[f] = sha256_file(tmpd / f)
            os.replace(tmpd / f, out_dir / f)
    (out_dir / "checksums.json").write_text(json.dumps({"files": sums}, indent=1) + "\n")
    log(f"  wrote {', '.join(MODEL_FILES + COPIED_FILES)} and checksums.json to {out_dir}")
    return out_dir


# ---------------------------------------------------------------------------------------------
# verification and loading


def fix_hint(folder: str | Path) -> str:
    """How to repair a converted folder: fetch for manifest models, else re-convert."""
    folder = Path(folder)
    try:
        manifest = load_manifest()
    except ModelError:
        manifest = {}
    name = folder.name
    if name in manifest and manifest[name].convert and folder.resolve() == (
            models_dir() / name).resolve():
        return f"run `audio-engine models fetch {name}` to convert it again"
    return (f"re-run convert-whisper (engine.models.whisper_convert.convert_whisper(CT2_DIR, "
            f"'{folder}'))")


def _problems(folder: Path) -> list[str]:
    sums_path = folder / "checksums.json"
    if not sums_path.exists():
        return [f"{sums_path} is missing (conversion not done or interrupted)"]
    try:
        sums = json.loads(sums_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return [f"{sums_path} is not a valid checksum list"]
    problems = []
    for f in MODEL_FILES + COPIED_FILES:
        if f not in sums:
            problems.append(f"{f} is not listed in checksums.json")
    for f, digest in sums.items():
        p = folder / f
        if not p.exists():
            problems.append(f"{p} is missing")
        elif not verify_file(p, str(digest).lower()):
            problems.append(f"{p} does not match its sha256 in checksums.json (modified or "
                            "corrupt)")
    return problems


def converted_ok(folder: str | Path) -> bool:
    """True if every converted file is present and matches ``checksums.json``."""
    return not _problems(Path(folder))


def load_converted(folder: str | Path) -> dict:
    """Verify a converted folder and return its ``whisper.json``; else raise ModelError."""
    folder = Path(folder)
    problems = _problems(folder)
    if problems:
        raise ModelError(f"converted Whisper model in {folder} was refused: "
                         + "; ".join(problems) + f". It was not loaded: {fix_hint(folder)}")
    meta = json.loads((folder / "whisper.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{folder / 'whisper.json'} has format version "
                         f"{meta.get('format_version')}, this engine reads {FORMAT_VERSION}: "
                         f"{fix_hint(folder)}")
    return meta
