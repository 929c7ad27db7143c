"""One fine-tuning job's training in a child process of its own.

Training runs for minutes to hours and holds the Python interpreter in between torch calls: in a
thread of the gateway it competed with request handling for the GIL and took a thread of the
default executor that every database call shares. A spawned child (never forked: torch and
threads) parses, tokenizes and trains; the gateway's side only relays progress and cancellation
over a pipe. The child dies with the gateway (Linux parent-death signal, and a closed pipe at the
next step), so a restarted gateway never finds an orphan still writing the job's checkpoints.
"""

import ctypes
import logging
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from adapters.errors import PeftServeError
from adapters.training.config import TrainingConfig
from adapters.training.pipeline import TrainingResult
from adapters.training.trainer import Progress, TrainingCancelled

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class TrainingProcessDied(Exception):
    """The child exited without a result (killed, out of memory, a crash in native code)."""


def train_in_process(base_dir: Path, training: bytes, validation: bytes | None, config: TrainingConfig,
                     work_dir: Path, *, on_progress: Callable[[Progress], None], cancel: threading.Event,
                     init_adapter: Path | None = None, on_checkpoint: Callable[[int, Path], None] | None = None,
                     poll_s: float = 0.2) -> tuple[TrainingResult, int]:
    """(result, trained tokens). Blocks: call it from a thread. Raises what the child raised
    (TrainingCancelled, a PeftServeError with its code) or TrainingProcessDied.
    ``on_checkpoint(step, archive)``: each checkpoint the child saved, as a tar of its own (the
    child goes on training meanwhile; the next checkpoint is another file)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_child_main, name="peftserve-training", daemon=True,
                            args=(theirs, str(base_dir), training, validation, config.model_dump(), str(work_dir),
                                  None if init_adapter is None else str(init_adapter)))
    child.start()
    theirs.close()
    cancel_sent = False
    try:
        while True:
            if cancel.is_set() and not cancel_sent:
                ours.send(("cancel",))
                cancel_sent = True
            if not ours.poll(poll_s):
                if not child.is_alive() and not ours.poll(0):
                    raise TrainingProcessDied(f"the training process exited with code {child.exitcode}")
                continue
            try:
                message = ours.recv()
            except EOFError:
                child.join(5)
                raise TrainingProcessDied(f"the training process exited with code {child.exitcode}") from None
            kind, payload = message[0], message[1:]
            if kind == "progress":
                on_progress(Progress(*payload))
            elif kind == "checkpoint":
                step, archive = payload
                if on_checkpoint is not None:
                    on_checkpoint(step, Path(archive))
            elif kind == "result":
                adapter_dir, eval_set, metadata, tokens = payload
                return TrainingResult(Path(adapter_dir), eval_set, metadata), tokens
            elif kind == "cancelled":
                raise TrainingCancelled()
            elif kind == "error":
                code, text = payload
                raise PeftServeError(text, code=code)
            else:  # "crash"
                raise RuntimeError(payload[0])
    finally:
        ours.close()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def _child_main(conn, base_dir: str, training: bytes, validation: bytes | None, config_json: dict,
                work_dir: str, init_adapter: str | None = None) -> None:
    _die_with_parent()
    from adapters.training.checkpoint_archive import pack
    from adapters.training.pipeline import prepare, run_training

    cancel = threading.Event()

    def on_checkpoint(step: int, folder: Path) -> None:
        archive = pack(folder, folder.with_name(f"checkpoint-{step:08d}.tar"))
        try:
            conn.send(("checkpoint", step, str(archive)))
        except (EOFError, OSError):
            cancel.set()

    def on_progress(p: Progress) -> None:
        try:
            conn.send(("progress", p.step, p.total_steps, p.loss, p.elapsed_s))
            if conn.poll():
                conn.recv()  # the only message the gateway sends: cancel
                cancel.set()
        except (EOFError, OSError):  # the gateway is gone: stop at this step
            cancel.set()

    try:
        config = TrainingConfig(**config_json)
        data = prepare(Path(base_dir), training, validation, config)
        result = run_training(Path(base_dir), data, config, Path(work_dir), on_progress=on_progress, cancel=cancel,
                              init_adapter=None if init_adapter is None else Path(init_adapter),
                              on_checkpoint=on_checkpoint)
        tokens = sum(len(e.input_ids) for e in data.train) * config.n_epochs
        message = ("result", str(result.adapter_dir), result.eval_set, result.metadata, tokens)
    except TrainingCancelled:
        message = ("cancelled",)
    except PeftServeError as e:
        message = ("error", e.code, e.message)
    except BaseException as e:  # noqa: BLE001 - reported to the gateway, which fails the job
        message = ("crash", f"{type(e).__name__}: {e}")
    try:
        conn.send(message)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the gateway dies (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            log.warning("could not ask to die with the gateway; an orphan stops at its next step")
