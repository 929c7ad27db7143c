"""The plugin's C++ op (server/workers/vllm_plugin/grouped_lora_kernel.cpp) on its own: against
an fp32 reference over the shapes its blocked loops split on, its refusals, and its build cache.
The wrapper around it is tested in test_lora_cpu_wrapper.py, the engine in test_lora_plugin_engine.py.
"""

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from server.workers.vllm_plugin import native_lora_op


@pytest.fixture(scope="module")
def op():
    loaded = native_lora_op.load()
    assert loaded is not None, "the native LoRA op did not build on this machine (see the log)"
    return loaded


@pytest.fixture(scope="module")
def op_avx2(tmp_path_factory):
    """The op as a machine without AVX-512 builds it (8-float vectors), run on this CPU; a copy of
    the source under another namespace (one process cannot load two libraries for one)."""
    from torch.utils import cpp_extension


    work = tmp_path_factory.mktemp("avx2-build")
    variant, n = re.subn(r"TORCH_LIBRARY(_IMPL)?\(peftserve", r"TORCH_LIBRARY\1(peftserve_avx2",
                         native_lora_op.SOURCE.read_text())
    assert n == 2
    (work / "avx2.cpp").write_text(variant)
    cflags = [f for f in native_lora_op.CFLAGS if f != "-march=native"] + ["-march=x86-64-v3"]
    cpp_extension.load(name="peftserve_avx2_test", sources=[str(work / "avx2.cpp")], extra_cflags=cflags,
                       extra_ldflags=list(native_lora_op.LDFLAGS), build_directory=str(work), is_python_module=False)
    return torch.ops.peftserve_avx2.grouped_lora


def weights(slots, in_features, rank, outs, seed=0):
    """The wrapper's bf16 caches: A (S, in, n*R) and B (S, R, out) with slice i in its own columns."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(slots, in_features, len(outs) * rank, generator=gen) * 0.3).to(torch.bfloat16)
    b = (torch.randn(slots, rank, sum(outs), generator=gen) * 0.3).to(torch.bfloat16)
    offsets = torch.tensor([0, *outs]).cumsum(0)
    return a, b, offsets


def grouped(token_slots):
    slots = sorted({s for s in token_slots if s >= 0})
    groups = [[t for t, s in enumerate(token_slots) if s == slot] for slot in slots]
    rows = torch.tensor([t for g in groups for t in g], dtype=torch.long)
    bounds = torch.tensor([0, *map(len, groups)]).cumsum(0)
    return rows, bounds, torch.tensor(slots, dtype=torch.long)


def reference(y, x, a, b, offsets, token_slots, rank, scale):
    out = y.float().clone()
    for t, s in enumerate(token_slots):
        if s < 0:
            continue
        h = scale * (x[t].float() @ a[s].float())  # (n*R,)
        for i in range(len(offsets) - 1):
            lo, hi = offsets[i].item(), offsets[i + 1].item()
            out[t, lo:hi] += h[i * rank:(i + 1) * rank] @ b[s, :, lo:hi].float()
    return out


SHAPES = {
    # (in, rank, output slices): the kernel works in blocks of 16 (8 without AVX-512) columns and
    # 4 rows, and falls back to scalar loops for what is left over
    "qkv r16": (64, 16, (64, 32, 32)),
    "qkv r4: rank columns not a multiple of the block": (48, 4, (48, 16, 16)),
    "single r8, odd widths": (40, 8, (37,)),
    "gate_up r32": (64, 32, (96, 96)),
    "r1": (16, 1, (8,)),
    "o r16: one column block": (64, 16, (64,)),
    "gate_up r48: six column blocks": (32, 48, (96, 96)),
}
BATCHES = {
    "decode: one row per slot, base rows between": [-1, 0, 1, -1, 2, 3, -1],
    "a prefill run: blocks of 4 rows, chunks of 8, a remainder": [2] * 23 + [-1, 0],
    "rows of a slot spread through the batch": [0, 1, 0, 1, 0, -1, 1, 0, 1, 0, 3],
    "one slot for every row": [1] * 5,
    "two rows per slot": [0, 0, -1, 1, 1, 3, 3],
}


# Every x86-64 machine this project runs on has AVX2 (the build fails loudly on one without); the
# AVX2 build is an x86 question, so other CPUs test their native build only.
BUILDS = {"native build": "op", **({"AVX2 build": "op_avx2"} if platform.machine() == "x86_64" else {})}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("token_slots", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_matches_an_fp32_reference_and_leaves_other_rows_alone(request, build, shape, token_slots):
    op = request.getfixturevalue(build)
    in_features, rank, outs = shape
    a, b, offsets = weights(4, in_features, rank, outs)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(token_slots) + 1, in_features, generator=gen).to(torch.bfloat16)  # one spare row
    wide = torch.randn(len(token_slots) + 1, sum(outs) + 5, generator=gen).to(torch.bfloat16)
    y = wide.narrow(1, 0, sum(outs))  # the wrapper's y: a view narrower than its rows
    before = wide.clone()
    op(y, x, a, b, *grouped(token_slots), offsets, 0.5)
    want = reference(before[:, :sum(outs)], x, a, b, offsets, token_slots, rank, 0.5)
    for t, s in enumerate(token_slots):
        if s < 0:
            assert torch.equal(wide[t], before[t]), f"row {t} has no adapter but changed"
    assert torch.equal(wide[-1], before[-1]) and torch.equal(wide[:, sum(outs):], before[:, sum(outs):])
    adapter_rows = [t for t, s in enumerate(token_slots) if s >= 0]
    # one bf16 rounding of the sum (values up to ~10: half an ulp is 0.03)
    torch.testing.assert_close(y[adapter_rows].float(), want[adapter_rows], atol=0.05, rtol=0.01)


def test_refuses_what_would_read_or_write_out_of_bounds(op):
    a, b, offsets = weights(2, 16, 4, (16,))
    x, y = torch.randn(3, 16).to(torch.bfloat16), torch.zeros(3, 16, dtype=torch.bfloat16)
    rows, bounds = torch.tensor([0, 1]), torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match="slot out of range"):
        op(y, x, a, b, rows, bounds, torch.tensor([2]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="row out of range"):
        op(y, x, a, b, torch.tensor([0, 3]), bounds, torch.tensor([1]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="bf16"):
        op(y.float(), x, a, b, rows, bounds, torch.tensor([1]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="shapes"):
        op(y, x[:, :8], a, b, rows, bounds, torch.tensor([1]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="row listed twice"):  # two chunks would write one row
        op(y, x, a, b, torch.tensor([1, 1]), bounds, torch.tensor([1]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="bounds"):
        op(y, x, a, b, rows, torch.tensor([0, 5]), torch.tensor([1]), offsets, 1.0)
    with pytest.raises(RuntimeError, match="row out of range"):  # y has fewer rows than x
        op(y[:1], x, a, b, rows, bounds, torch.tensor([1]), offsets, 1.0)
    wide_b = torch.zeros(2, 4, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="offsets"):  # a slice's columns outside the module
        op(torch.zeros(3, 32, dtype=torch.bfloat16), x, weights(2, 16, 4, (16, 16))[0], wide_b, rows, bounds,
           torch.tensor([1]), torch.tensor([0, 40, 32]), 1.0)
    assert not y.any()


def build_in(cache, env_extra):
    env = {**os.environ, native_lora_op.CACHE_ENV: str(cache), **env_extra}
    return subprocess.run([sys.executable, "-m", "server.workers.vllm_plugin.native_lora_op"], env=env,
                          capture_output=True, text=True, timeout=300)


def test_build_is_cached_and_a_missing_compiler_means_the_torch_path(tmp_path):
    no_compiler = {"CXX": "/bin/false"}
    first = build_in(tmp_path / "empty", no_compiler)
    assert first.returncode == 1 and "native LoRA op unavailable" in first.stderr
    assert not list((tmp_path / "empty").glob("*.so")), "a failed build left a library behind"

    built = build_in(tmp_path / "cache", {})
    assert built.returncode == 0, built.stderr
    libraries = list((tmp_path / "cache").iterdir())
    assert [p.name for p in libraries] == [native_lora_op.library_path().name]  # no build folder left
    again = build_in(tmp_path / "cache", no_compiler)  # the cached build needs no compiler
    assert again.returncode == 0 and "loaded from" in again.stderr


def test_a_damaged_cached_library_is_built_again(tmp_path):
    assert build_in(tmp_path, {}).returncode == 0
    (library,) = tmp_path.glob("*.so")
    library.write_bytes(b"not a library")
    again = build_in(tmp_path, {})
    assert again.returncode == 0, again.stderr
    assert library.read_bytes()[:4] == b"\x7fELF"


def test_a_cache_folder_it_cannot_write_means_a_private_build(tmp_path):
    (tmp_path / "a-file").write_text("")  # no folder can be made below a file (root ignores modes)
    built = build_in(tmp_path / "a-file" / "cache", {})
    assert built.returncode == 0, built.stderr
    assert "loaded from /" in built.stderr and str(tmp_path) not in built.stderr.split("loaded from")[-1]
    private = Path(built.stderr.split("loaded from")[-1].strip()).parent
    assert not private.exists(), "the private build folder was left behind"
