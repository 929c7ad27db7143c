"""Adapter archives for upload tests: good ones, and one per unsafe-archive rule."""

import io
import os
import tarfile
import zipfile
from pathlib import Path

FILES = ("adapter_config.json", "adapter_model.safetensors")


def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def good_tar_gz(folder: Path) -> bytes:
    return _tar([(f"my-adapter/{n}", (folder / n).read_bytes()) for n in FILES] + [("my-adapter/README.md", b"hi")])


def good_zip(folder: Path) -> bytes:
    return _zip([(n, (folder / n).read_bytes()) for n in FILES])


def bad_archives(folder: Path, limit: int) -> list[tuple[str, str, bytes, int, str]]:
    """(case id, filename, bytes, status, code)."""
    config, weights = ((folder / n).read_bytes() for n in FILES)
    link = tarfile.TarInfo("adapter_model.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("adapter_model.safetensors")
    device.type = tarfile.CHRTYPE
    return [
        ("zip_slip", "a.zip", _zip([("../../evil/adapter_config.json", config), ("adapter_model.safetensors", weights)]),
         422, "unsafe_archive"),
        ("tar_absolute_path", "a.tar.gz", _tar([("/tmp/adapter_config.json", config),
                                                ("adapter_model.safetensors", weights)]), 422, "unsafe_archive"),
        ("tar_symlink", "a.tar.gz", _tar([("adapter_config.json", config), link]), 422, "unsafe_archive"),
        ("tar_device_file", "a.tar", _tar([("adapter_config.json", config), device], mode="w"), 422,
         "unsafe_archive"),
        ("nested_archive", "a.zip", _zip([("inner.zip", _zip([(n, b"x") for n in FILES]))]), 422, "nested_archive"),
        ("zip_bomb", "a.zip", _zip([("adapter_config.json", config),
                                    ("adapter_model.safetensors", b"\0" * (limit + 1024))]), 413, "archive_too_large"),
        ("too_many_members", "a.zip", _zip([(f"junk/{i}.txt", b"x") for i in range(40)]), 413,
         "archive_too_many_files"),
        ("archive_missing_weights", "a.tar.gz", _tar([("adapter_config.json", config)]), 422, "missing_adapter_file"),
        ("archive_with_pickle", "a.zip", _zip([("adapter_config.json", config), ("adapter_model.bin", b"\x80\x04")]),
         422, "pickle_not_allowed"),
        ("archive_split_folders", "a.zip", _zip([("a/adapter_config.json", config),
                                                 ("b/adapter_model.safetensors", weights)]), 422, "ambiguous_archive"),
        ("corrupt_archive", "a.zip", os.urandom(2048), 422, "invalid_archive"),
    ]
