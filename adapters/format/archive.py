"""Safe extraction of an uploaded adapter archive (.tar, .tar.gz/.tgz, .zip).

Only the two files of a PEFT LoRA folder are written out, at names we choose; every member is
checked first: no absolute paths or ``..``, no links or device files, no nested archives, no
pickle files, bounded member count, and bounded *actual* expanded bytes (zip bombs lie about
their sizes, so the budget is enforced while reading).
"""

import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from adapters.errors import AdapterInvalidError, PayloadTooLargeError, UnsupportedMediaTypeError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
NESTED_SUFFIXES = (".tar", ".gz", ".tgz", ".zip", ".bz2", ".xz", ".7z", ".rar", ".zst")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WANTED = ("adapter_config.json", "adapter_model.safetensors")
CHUNK = 1024 * 1024


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def _unsafe(message: str, code: str = "unsafe_archive") -> AdapterInvalidError:
    return AdapterInvalidError(f"archive: {message}", code=code, param="file")


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise _unsafe(f"member {name!r} has an absolute path")
    if ".." in path.parts:
        raise _unsafe(f"member {name!r} escapes the archive with '..'")
    lower = name.lower()
    if lower.endswith(NESTED_SUFFIXES):
        raise _unsafe(f"member {name!r} is a nested archive; upload one flat archive", "nested_archive")
    if lower.endswith(PICKLE_SUFFIXES):
        raise AdapterInvalidError(f"archive member {name!r} is a pickle-based file; only safetensors is accepted",
                                  code="pickle_not_allowed", param="file")
    return path


class _Budget:
    def __init__(self, max_bytes: int):
        self.left = max_bytes
        self.max_bytes = max_bytes

    def copy(self, src: BinaryIO, dest: Path) -> None:
        with dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                self.left -= len(chunk)
                if self.left < 0:
                    raise PayloadTooLargeError(
                        f"archive expands to more than {self.max_bytes} bytes", code="archive_too_large", param="file")
                out.write(chunk)


@contextmanager
def _members(path: Path, filename: str) -> Iterator[list[tuple[str, bool, int, callable]]]:
    """Yield (name, is_regular_file, declared_size, opener) for every member, after type checks."""
    try:
        if filename.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                members = []
                for info in zf.infolist():
                    # Unix mode in the high bits; a file type of 0 means "not recorded" (plain file).
                    file_type = stat.S_IFMT(info.external_attr >> 16)
                    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                        raise _unsafe(f"member {info.filename!r} is a link or special file")
                    members.append((info.filename, not info.is_dir(), info.file_size,
                                    lambda info=info: zf.open(info)))
                yield members
        else:
            with tarfile.open(path, mode="r:*") as tf:
                members = []
                for m in tf.getmembers():
                    if not (m.isfile() or m.isdir()):
                        raise _unsafe(f"member {m.name!r} is a link or special file")
                    members.append((m.name, m.isfile(), m.size, lambda m=m: tf.extractfile(m)))
                yield members
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise AdapterInvalidError(f"archive: cannot be read ({type(e).__name__}: {e})", code="invalid_archive",
                                  param="file") from None


def extract_adapter(path: Path, filename: str, dest: Path, *, max_members: int, max_bytes: int) -> dict[str, Path]:
    """Extract the adapter's two files from the archive at ``path`` into ``dest``."""
    if not is_archive(filename):
        raise UnsupportedMediaTypeError(f"{filename!r} is not a .tar, .tar.gz, .tgz or .zip archive", param="file")
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[PurePosixPath, callable]] = {}
    with _members(path, filename) as members:
        if len(members) > max_members:
            raise PayloadTooLargeError(f"archive has {len(members)} members; at most {max_members} allowed",
                                       code="archive_too_many_files", param="file")
        if sum(size for _, _, size, _ in members) > max_bytes:
            raise PayloadTooLargeError(f"archive declares more than {max_bytes} expanded bytes",
                                       code="archive_too_large", param="file")
        for name, is_file, _, opener in members:
            member = _check_name(name)
            if is_file and member.name in WANTED:
                if member.name in found:
                    raise _unsafe(f"archive holds more than one {member.name}", "ambiguous_archive")
                found[member.name] = (member, opener)
        missing = [w for w in WANTED if w not in found]
        if missing:
            raise AdapterInvalidError(f"archive lacks {', '.join(missing)}", code="missing_adapter_file", param="file")
        if found[WANTED[0]][0].parent != found[WANTED[1]][0].parent:
            raise _unsafe("adapter_config.json and adapter_model.safetensors are in different folders",
                          "ambiguous_archive")
        budget = _Budget(max_bytes)
        out = {}
        for wanted in WANTED:
            with found[wanted][1]() as src:
                budget.copy(src, dest / wanted)
            out[wanted] = dest / wanted
        return out
