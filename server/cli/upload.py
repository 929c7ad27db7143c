"""``peftserve adapter upload``: send an adapter folder or archive through the tenant API,
with a progress bar over the bytes sent."""

from contextlib import ExitStack
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from adapters.format.archive import is_archive


class _ProgressReader:
    """A file object that advances a progress bar as httpx reads it."""

    def __init__(self, f, progress: Progress, task):
        self._f, self._progress, self._task = f, progress, task

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._progress.advance(self._task, len(data))
        return data


def upload_files(path: Path) -> list[Path]:
    if path.is_dir():
        return [path / "adapter_config.json", path / "adapter_model.safetensors"]
    if is_archive(path.name):
        return [path]
    raise ValueError(f"{path} is neither a PEFT LoRA folder nor a .tar/.tar.gz/.zip archive")


def upload(url: str, api_key: str, path: Path, form: dict, eval_set: Path | None, *, show_progress: bool) -> httpx.Response:
    files = upload_files(path)
    for f in files + ([eval_set] if eval_set else []):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing")
    total = sum(f.stat().st_size for f in files)
    with ExitStack() as stack, Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                        TransferSpeedColumn(), TimeRemainingColumn(),
                                        disable=not show_progress) as progress:
        task = progress.add_task(f"uploading {path.name}", total=total)
        parts = [("file", (f.name, _ProgressReader(stack.enter_context(f.open("rb")), progress, task)))
                 for f in files]
        if eval_set:
            parts.append(("eval_set", (eval_set.name, stack.enter_context(eval_set.open("rb")))))
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=900) as client:
            return client.post("/v1/adapters", data=form, files=parts)
