"""Read a CTranslate2 Whisper model (``model.bin`` + ``config.json``) with numpy only.

``model.bin`` layout (little endian), as written by CTranslate2's ``ModelSpec._serialize``::

    u32   binary_version                       (1 .. 6; 6 is current)
    str   spec name, e.g. "WhisperSpec"        (binary_version >= 2)
    u32   spec revision                        (binary_version >= 2)
    u32   number of variables
    repeated per variable:
        str   name, e.g. "encoder/layer_0/self_attention/linear_0/weight"
        u8    rank
        u32   dims[rank]
        u8    dtype id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
              (binary_version < 4: an item size in bytes instead: 4 float32, 2 int16, 1 int8)
        u32   byte count (binary_version < 4: element count)
        raw   data, C order
    u32   number of aliases                    (binary_version >= 3)
    repeated: str alias, str target name       (alias shares the target's array)

where ``str`` is a u16 length that counts a trailing NUL, then the UTF-8 bytes and that NUL.

Quantised models store an ``int8``/``int16`` weight with a sibling ``weight_scale`` (one float per
output row); :func:`dequantize` turns those back into float32 (``weight / weight_scale``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: raw bits, widened by _bf16_to_f32
}
_ITEM_SIZE_DTYPES: dict[int, np.dtype] = {4: np.dtype("<f4"), 2: np.dtype("<i2"),
                                          1: np.dtype("i1")}
MAX_BINARY_VERSION = 6


@dataclass
class Ct2Model:
    """Variables and configuration of a CTranslate2 model."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


class _Reader:
    def __init__(self, data: memoryview, source: str):
        self.data = data
        self.pos = 0
        self.source = source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelError(f"{self.source}: truncated CTranslate2 model file (wanted {n} bytes "
                             f"at offset {self.pos}, file has {len(self.data)}); re-fetch it")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        return raw.rstrip(b"\x00").decode("utf-8")


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse ``model.bin``; arrays keep their stored dtype (bfloat16 is widened to float32)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"CTranslate2 model file not found: {path}") from None
    r = _Reader(memoryview(raw), str(path))
    version = r.u32()
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ModelError(f"{path}: unsupported CTranslate2 binary version {version} "
                         f"(this reader knows 1..{MAX_BINARY_VERSION})")
    spec, revision = "", 1
    if version >= 2:
        spec = r.string()
        revision = r.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u32()):
        name = r.string()
        rank = r.u8()
        shape = tuple(r.u32() for _ in range(rank))
        if version >= 4:
            type_id = r.u8()
            if type_id not in _DTYPES:
                raise ModelError(f"{path}: variable {name} has unknown dtype id {type_id}")
            dt = _DTYPES[type_id]
            nbytes = r.u32()
        else:
            item = r.u8()
            if item not in _ITEM_SIZE_DTYPES:
                raise ModelError(f"{path}: variable {name} has unknown item size {item}")
            dt = _ITEM_SIZE_DTYPES[item]
            nbytes = r.u32() * item
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize != nbytes:
            raise ModelError(f"{path}: variable {name} shape {shape} does not match its "
                             f"{nbytes} bytes")
        arr = np.frombuffer(r.take(nbytes), dtype=dt).reshape(shape)
        if type_id_is_bf16(version, dt):
            arr = _bf16_to_f32(arr)
        variables[name] = arr
    aliases: dict[str, str] = {}
    if version >= 3 and r.pos < len(r.data):
        for _ in range(r.u32()):
            alias = r.string()
            aliases[alias] = r.string()
        for alias, target in aliases.items():
            if target in variables:
                variables[alias] = variables[target]
    return Ct2Model(spec=spec, revision=revision, binary_version=version, variables=variables,
                    aliases=aliases)


def type_id_is_bf16(version: int, dt: np.dtype) -> bool:
    """True when ``dt`` is the raw-bits stand-in used for bfloat16 variables."""
    return version >= 4 and dt == np.dtype("<u2")


def dequantize(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Variable ``name`` as float32, undoing int8/int16 quantisation with ``<name>_scale``."""
    arr = variables[name]
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    scale = variables.get(name + "_scale")
    if scale is None:
        return arr.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim == 1 and arr.ndim == 2:
        scale = scale[:, None]
    return arr.astype(np.float32) / scale


def read_ct2_whisper(folder: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(variables, config)`` of a CTranslate2 Whisper model folder.

    ``variables`` maps each name (aliases included) to a numpy array in its stored dtype;
    ``config`` is ``config.json`` (``alignment_heads``, ``suppress_ids``, ``suppress_ids_begin``,
    ``lang_ids``) plus ``spec``/``revision``/``binary_version`` of the file.
    """
    folder = Path(folder)
    model = read_model_bin(folder / "model.bin")
    if model.spec and model.spec != "WhisperSpec":
        raise ModelError(f"{folder / 'model.bin'} is a {model.spec} model, not WhisperSpec")
    cfg_path = folder / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"missing {cfg_path} next to model.bin") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_path}: not valid JSON: {e}") from None
    config = dict(config)
    config.update(spec=model.spec, revision=model.revision, binary_version=model.binary_version)
    return model.variables, config
