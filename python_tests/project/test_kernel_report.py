"""benchmarks/kernel_report.py's parsers on small made-up compiler outputs (the full report needs nvcc and
runs in CI from scripts/run_tests.sh): loop finding, instruction classes, load widths, occupancy."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import kernel_report as kr  # noqa: E402

SASS = '''
.text._Z3fooPf:
	//## File "/x/k.cu", line 10
        /*0000*/                   LDC R1, c[0x0][0x28] ;
.L_x_0:
	//## File "/x/k.cu", line 12
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   IMAD R9, R9, 0x3, RZ ;
        /*0030*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
.L_x_1:
	//## File "/x/k.cu", line 14
        /*0040*/                   LDS R6, [R8] ;
        /*0050*/                   LDS.64 R10, [R8+0x4] ;
        /*0060*/                   FFMA R7, R6, R10, R7 ;
        /*0070*/                   FFMA R7, R6, R11, R7 ;
        /*0080*/              @!P0 BRA `(.L_x_1) ;
	//## File "/x/k.cu", line 12
        /*0090*/                   LDG.E.U16 R12, desc[UR4][R2.64] ;
        /*00a0*/               @P1 BRA `(.L_x_0) ;
        /*00b0*/                   EXIT ;
.text._Z3barv:
        /*0000*/                   EXIT ;
'''

PTXAS = '''ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Function properties for _Z9helperv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
'''


def test_innermost_fma_loop_and_its_enclosing_loop():
    code = kr.parse_sass(SASS)
    assert set(code) == {"_Z3fooPf", "_Z3barv"}
    loops = kr.innermost_loops(code["_Z3fooPf"])
    assert len(loops) == 1
    (lp,) = loops
    assert (lp.instrs, lp.ffma, lp.lds, lp.ldg, lp.line) == (5, 2, 2, 0, "k.cu:14")
    # the enclosing loop outside the inner one: LDG.128, IMAD, CALL, LDG.U16, BRA
    assert (lp.outer.instrs, lp.outer.ldg, lp.outer.calls, lp.outer.ldg_widths) == (5, 2, 1, {128, 16})
    assert kr.innermost_loops(code["_Z3barv"]) == []


def test_ptxas_resources_and_entry_functions_only():
    funcs = kr.parse_ptxas(PTXAS)
    assert list(funcs) == ["_Z3fooPf"]
    f = funcs["_Z3fooPf"]
    assert (f.regs, f.spill_stores, f.spill_loads, f.static_smem) == (40, 8, 4, 2048)


def test_load_width_and_occupancy():
    assert [kr.load_width(op) for op in ("LDG.E", "LDG.E.U16", "LDG.E.64", "LDG.E.128.CONSTANT", "LD.E.U8")] == \
        [32, 16, 64, 128, 8]
    loop = kr.Loop("x.cu:1")
    loop.add("LDGSTS.E.BYPASS.128")            # cp.async global -> shared counts as a 128-bit global load
    assert (loop.ldg, loop.ldg_widths, loop.lds) == (1, {128}, 0)
    assert kr.occupancy(32, 0, 256) == (8, 1.0)           # 64 warps
    assert kr.occupancy(168, 17408, 128) == (3, 12 / 64)  # register-bound: 168 regs -> 5376/warp
    assert kr.occupancy(32, 100 * 1024, 256)[0] == 2      # shared-memory-bound


def test_variant_names():
    assert kr.short_variant("void anyres_fast::(anonymous namespace)::filtered_lrelu_kernel<__half, 2, 2>"
                            "(anyres_fast::FilteredLReluParams, int, int, long)") == "filtered_lrelu_kernel<half,2,2>"
