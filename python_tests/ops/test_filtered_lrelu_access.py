"""filtered_lrelu's down pass (stage 4) makes conflict-free shared-memory loads and coalesced output stores:
the traced accesses of one emulated CTA (benchmarks/access_counts.py) counted per warp instruction,
and the counting model itself on hand-made access patterns with known wavefront and sector counts."""
import sys
from pathlib import Path

import pytest

from helpers import missing_toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import access_counts as ac  # noqa: E402


def lanes(offsets, nbytes=4):
    return [(lane, off, nbytes) for lane, off in enumerate(offsets)]


def test_wavefront_model_on_known_patterns():
    assert ac.shared_wavefronts(lanes([4 * i for i in range(32)])) == 1            # consecutive words
    assert ac.shared_wavefronts(lanes([0] * 32)) == 1                              # one word, broadcast
    assert ac.shared_wavefronts(lanes([8 * i for i in range(32)])) == 2            # stride 2: even banks only
    assert ac.shared_wavefronts(lanes([4 * 33 * i for i in range(32)])) == 1       # odd stride 33
    assert ac.shared_wavefronts(lanes([4 * 32 * i for i in range(32)])) == 32      # one bank
    # 8-byte loads 2·odd words apart: each half warp covers the 32 banks once
    assert ac.shared_wavefronts(lanes([8 * 75 * i for i in range(32)], 8)) == 2
    assert ac.shared_wavefronts(lanes([16 * i for i in range(32)], 8)) == 4        # 4 words apart: 2-way per half
    assert ac.global_sectors(lanes([4 * i for i in range(32)])) == 4
    assert ac.global_sectors(lanes([4 * 64 * i for i in range(32)])) == 32         # one row each
    assert ac.global_sectors(lanes([4 + 4 * i for i in range(32)])) == 5           # not sector-aligned


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    try:
        return ac.build(ac.ROOT / "csrc", tmp_path_factory.mktemp("flrelu_trace"))
    except SystemExit as e:
        missing_toolchain(str(e))


@pytest.mark.parametrize("case", [c for c in ac.CASES if not c.fd[2]], ids=lambda c: c.name)
def test_radial_down_pass_is_conflict_free_and_coalesced(traced, case):
    counts = ac.site_counts(ac.run_case(traced, case))
    n, cost, ideal = counts[0]                          # s_act windows: 12 rows x (9 or 10 loads) per warp
    # half the filter rows start on an odd word: two 4-byte end loads, 1 wavefront over ideal each
    assert cost <= ideal + 2 * (case.fd[1] // 2) * (case.tile * case.tile // 4 // 32), counts
    assert counts[1][1] == counts[1][2]                 # fd taps: broadcast
    for site in (2, 3, 4):                              # s_mid stores and loads, output stores
        assert counts[site][1] == counts[site][2], (ac.SITES[site], counts[site])
    assert counts[4][0] == case.tile * case.tile // 32  # one store per output, 32 outputs per instruction
