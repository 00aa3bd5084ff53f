"""filtered_lrelu's CUDA kernel on the CPU with every CTA run as 256 real threads taking turns between
barriers (csrc/kernels/host_emulation.h), so a missing or misplaced __syncthreads, or threads of a CTA
that race on the same shared-memory element, show up as a wrong result, in thread order or reversed.
test_filtered_lrelu.py checks the index math with each CTA as one thread; this file checks the barriers."""
import ctypes

import pytest
import torch
from helpers import rel_error

from helpers_flrelu_emulation import (EMU_CASES, HARNESS, EmulatedExtension, build_emulation,
                                      check_emulated_matches_reference)

from anyres_fast.ops import filtered_lrelu_op as fl

# the single-thread harness plus the emulation's settings and findings
_HARNESS = HARNESS + r'''
namespace emu = anyres_fast::emulation;
extern "C" void emu_configure(int reverse_order, int skip_barrier_line) {
  emu::reverse_order = reverse_order != 0;
  emu::skip_barrier_line = skip_barrier_line;
}
extern "C" void emu_clear_findings() {
  emu::barrier_lines.clear();
  emu::max_block_threads = 0;
  emu::error_count = 0;
  emu::first_error.clear();
}
extern "C" int emu_max_block_threads() { return int(emu::max_block_threads); }
extern "C" long emu_error_count() { return emu::error_count; }
extern "C" const char* emu_first_error() { return emu::first_error.c_str(); }
extern "C" int emu_barrier_lines(int* lines, int capacity) {
  int n = 0;
  for (int line : emu::barrier_lines)
    if (n < capacity) lines[n++] = line;
  return int(emu::barrier_lines.size());
}
'''

# up 1/2/4, down 1/2/4, separable and 2-D filters on both sides, flip, no clamp, several tiles
CASES = [EMU_CASES[i] for i in (0, 3, 6, 7, 8)]
ORDERS = {"forward": 0, "reverse": 1}
# one plane of the first case (separable up and down filters, so all four barriers run), two tiles tall, and
# of the radial case (12x12 down filter: its own barrier before the output tile is stored)
MUTATION_CASES = {"separable": ((1, 1, 38, 20),) + EMU_CASES[0][1:], "radial": ((1, 1, 36, 20),) + EMU_CASES[2][1:]}


class _Emulation:
    """The compiled harness: the extension stand-in plus the emulation's settings and findings."""

    def __init__(self, lib):
        self.lib = lib
        self.ext = EmulatedExtension(lib)
        lib.emu_first_error.restype = ctypes.c_char_p
        lib.emu_error_count.restype = ctypes.c_long

    def configure(self, reverse, skip_barrier_line=-1):
        self.lib.emu_configure(int(reverse), skip_barrier_line)
        self.lib.emu_clear_findings()

    def barrier_lines(self):
        lines = (ctypes.c_int * 64)()
        n = self.lib.emu_barrier_lines(lines, 64)
        return list(lines[:n])

    def assert_clean(self):
        """Every CTA ran 256 threads and no barrier was misused."""
        assert self.lib.emu_max_block_threads() == 256, "the CTAs did not run as 256 threads"
        errors = self.lib.emu_error_count()
        assert errors == 0, f"{errors} barrier errors, first: {self.lib.emu_first_error().decode()}"


@pytest.fixture(scope="module")
def emulation(tmp_path_factory, monkeypatch_module):
    lib = build_emulation(tmp_path_factory.mktemp("flrelu_emu_threads"),
                          ("-pthread", "-DANYRES_FAST_HOST_EMULATION_THREADS"), _HARNESS)
    emu = _Emulation(lib)
    monkeypatch_module.setattr(fl._dispatch, "extension", lambda: emu.ext)
    return emu


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", CASES)
def test_threaded_kernel_matches_reference(emulation, case, order):
    """Forward with sign record, backward (sign read) and masked forward, as in the single-thread test."""
    emulation.configure(reverse=ORDERS[order])
    check_emulated_matches_reference(case)
    emulation.assert_clean()


def _forward_error(case):
    shape, up, down, fus, fds, padding, clamp, flip = case
    gen = torch.Generator().manual_seed(3)
    mk = lambda s: None if s is None else torch.randn(*s, generator=gen)
    fu, fd = mk(fus), mk(fds)
    x, b = torch.randn(*shape, generator=gen), torch.randn(shape[1], generator=gen)
    y, _ = fl._forward_cuda(x, fu, fd, b, up, down, padding, 1.3, 0.2, clamp, flip, True)
    f64 = lambda t: None if t is None else t.double()
    return rel_error(y, fl.filtered_lrelu_ref(x.double(), f64(fu), f64(fd), b.double(), up, down, padding, 1.3,
                                              0.2, clamp, flip))


@pytest.mark.parametrize("kind", MUTATION_CASES)
def test_each_missing_barrier_is_detected(emulation, kind):
    """Mutation check: with any one of the kernel's barriers turned off, the forward pass of a case that
    runs all of its path's barriers (separable up filter, separable or radial down filter, sign record)
    goes wrong in at least one thread order."""
    case = MUTATION_CASES[kind]
    emulation.configure(reverse=False)
    assert _forward_error(case) <= 1e-5
    emulation.assert_clean()
    lines = emulation.barrier_lines()
    assert len(lines) == 4, f"expected the kernel's 4 barriers, ran {lines}"
    for line in lines:
        errors = []
        for reverse in (False, True):
            emulation.configure(reverse, skip_barrier_line=line)
            errors.append(_forward_error(case))
        assert not all(e <= 1e-5 for e in errors), f"barrier on line {line} removed: errors {errors}"
    emulation.configure(reverse=False)
