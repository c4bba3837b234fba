"""Which tests run in which tier, decided in one place (applied by tests/conftest.py).

`make test` runs everything; `make test-fast` (``-m "not slow"``) is the unit tier a
developer runs between edits. Marks live here rather than in each file so the tiers can be
read and changed together, and so branches adding test files never edit the same lines.
"""

from __future__ import annotations

import pytest

# Exhaustive sweeps (every zoo model, every width, every kernel variant, every rounding
# mode): every case but the representatives named here is slow. The representatives reach
# the same code paths on the smallest input. "file::test" -> parametrize ids kept fast.
SWEEPS: dict[str, set[str]] = {
    "tests/freeze/test_freeze.py::test_zoo_model_frozen_is_bit_exact": {"lenet-8"},
    "tests/backends/hls4ml/test_fpga.py::test_zoo_model_csim_is_bit_exact": {"lenet"},
    # lenet's min-max levels are affine; the per-channel case has int8 tables and rows at
    # 1..8 bits: both level kinds and every width stay fast on each backend
    "tests/backends/hls4ml/test_fpga.py::test_per_channel_widths_are_exact_and_stored_at_their_own_widths": {  # noqa: E501
        "nonuniform"
    },
    "tests/backends/tvm/test_tvm.py::test_zoo_model_is_bit_exact": {"lenet-cpu", "lenet-arm"},
    "tests/backends/tvm/test_tvm.py::test_per_channel_widths_are_exact_and_stored_at_their_own_widths": {  # noqa: E501
        "nonuniform-cpu",
        "uniform-arm",
    },
    "tests/backends/tvm/test_tvm.py::test_parallel_schedule_is_exact_on_two_threads": {"cpu"},
    "tests/backends/tvm/test_tvm_avx512.py::test_dense_takes_a_vector_kernel_and_is_exact": {
        "int8_inputs-4",
        "int16_inputs-1",
    },
    # every ISA, both level kinds and every width once (of 64 and 48 TVM builds)
    "tests/backends/tvm/test_vector_kernels.py::test_gemv_is_exact": {
        "affine-1-alderlake",
        "table-2-x86-64-v3",
        "affine-3-x86-64-v4",
        "table-4-alderlake",
        "affine-5-sapphirerapids",
        "table-6-x86-64-v4",
        "table-7-x86-64-v3",
        "affine-8-sapphirerapids",
    },
    "tests/backends/tvm/test_vector_kernels.py::test_gemm_decodes_once_and_is_exact": {
        "affine-1-x86-64-v4",
        "table-2-x86-64-v3",
        "table-3-sapphirerapids",
        "affine-4-alderlake",
        "table-6-alderlake",
        "affine-8-x86-64-v3",
    },
    # binary mode: every ISA, activation range and level kind once (of 32 builds each)
    "tests/backends/tvm/test_vector_kernels.py::test_binary_gemv_is_exact": {
        "affine-x_range0-x86-64-v3",
        "table-x_range1-alderlake",
        "affine-x_range2-x86-64-v4",
        "table-x_range3-sapphirerapids",
    },
    # byte digits: each range (2, 3, 4 digits) once, on VNNI and on AVX2's split/maddubs
    "tests/backends/tvm/test_vector_kernels.py::test_gemm_on_byte_digits_is_exact": {
        "x_range0-2-x86-64-v3",
        "x_range1-2-sapphirerapids",
        "x_range2-3-x86-64-v4",
        "x_range3-4-alderlake",
    },
    "tests/backends/tvm/test_tvm_vector.py::test_wide_inputs_run_the_gemm_per_byte_digit_and_are_exact": {  # noqa: E501
        "nonuniform-x86-64-v3",
        "uniform-rpi4",
    },
    # grouped convs' padded rows and flat grid: one level kind on each ISA family
    "tests/backends/tvm/test_pad_rows.py::test_grouped_convs_on_padded_rows_equal_the_simulator": {
        "uniform-x86-64-v3",
        "nonuniform-x86-64-v4",
        "nonuniform-rpi5",
    },
    "tests/backends/tvm/test_cpu.py::test_whole_row_convs_equal_the_simulator": {"x86-64-v4"},
    # tall tiles: one and two pixel vectors, on VNNI and on AVX2
    "tests/backends/tvm/test_vector_kernels.py::test_layers_of_few_pixel_vectors_take_tall_tiles_exactly": {  # noqa: E501
        "1-sapphirerapids",
        "2-x86-64-v3",
    },
    "tests/backends/tvm/test_vector_kernels.py::test_binary_gemm_is_exact": {
        "table-x_range0-x86-64-v4",
        "affine-x_range1-sapphirerapids",
        "table-x_range2-x86-64-v3",
        "affine-x_range3-alderlake",
    },
    # whole models on the vector kernels: each ISA (AVX2, AVX-512, NEON with and without
    # dotprod) and each level kind stays fast, not every pair (20 TVM builds)
    "tests/backends/tvm/test_tvm_vector.py::test_every_width_takes_the_vector_kernels_and_is_exact": {  # noqa: E501
        "uniform-x86-64-v3",
        "nonuniform-x86-64-v4",
        "nonuniform-rpi4",  # the objects the aarch64 disassembly test reads
        "nonuniform-rpi5",
    },
    "tests/backends/tvm/test_tvm_vector.py::test_per_channel_widths_on_the_vector_kernels_are_exact": {  # noqa: E501
        "x86-64-v3",
        "rpi5",
    },
    "tests/backends/tvm/test_tvm_vector.py::test_strided_dilated_and_odd_convs_on_the_implicit_gemm_are_exact": {  # noqa: E501
        "nonuniform-x86-64-v3",
        "uniform-x86-64-v4",
        "uniform-rpi4",
        "nonuniform-rpi5",
    },
    "tests/backends/tvm/test_tvm_vector.py::test_one_channel_convs_pack_neighbouring_columns_and_are_exact": {  # noqa: E501
        "uniform-x86-64-v3",
        "nonuniform-rpi4",
    },
    "tests/test_cli.py::test_bad_input_is_one_line": {"args0-needles0"},
    # a Verilator build apiece: the bad pointer stays fast, $fatal and SIGKILL are slow
    "tests/backends/rtl/test_rtl_crash.py::test_a_crashing_verilated_model_is_one_error": {
        "SIGSEGV"
    },
    "tests/interop/test_qonnx_import.py::test_representable_rounding_imports_exactly": {
        "mode=FLOOR",
        "mode=HALF_UP",
        "mode=ROUND-scale=0.015625",
    },
    "tests/interop/test_qonnx_export.py::test_export_executes_exactly_under_qonnx": {
        "tables",
        "cnn",
    },
    "tests/test_bad_input_artifacts.py::test_disagreement_exits_1_and_says_where": {
        "fpga-fpga_csim"
    },
}

# Whole tests in the slow tier: each starts several `qcompile` processes (a Python and torch
# start-up apiece, seconds each), trains or builds artifacts, to prove end to end what the
# fast tier proves in process (tests/bad_inputs.py runs main() itself) or on one
# representative (tests/test_cli.py::test_train_json_contract runs the CLI as a user does).
SLOW_TESTS: set[str] = {
    # every width of every level kind in one chain, and the io_stream variant: the sweeps
    # above keep both kinds and widths 1..8 fast
    "tests/backends/hls4ml/test_fpga.py::test_every_weight_bitwidth_and_lut_kind_is_exact",
    "tests/backends/hls4ml/test_fpga.py::test_io_stream_csim_is_bit_exact",
    "tests/backends/tvm/test_tvm.py::test_every_weight_bitwidth_and_lut_kind_is_exact",
    # the conv stack beside it keeps the threaded batch of one fast on both x86 levels
    "tests/backends/tvm/test_spmd.py::test_a_threaded_mobilenet_equals_the_simulator",
    # the in-process tests beside these check the same fields and crashes
    "tests/backends/tvm/test_llvm_check.py::test_bad_fields_are_one_line_errors",
    "tests/backends/test_worker.py::test_simulate_reports_a_crash_in_one_line",
    "tests/backends/rtl/test_rtl_crash.py::test_simulate_reports_a_crashing_verilated_model_in_one_line",
    "tests/test_cli.py::test_existing_run_is_not_overwritten",
    "tests/test_cli.py::test_user_model_factory",
    "tests/test_cli.py::test_recipe_file_with_flag_override",
    "tests/test_compile_cli.py::test_user_mistakes_are_one_line",
    "tests/test_compile_cli.py::test_freeze_default_output_beside_checkpoint",
    "tests/test_compile_cli.py::test_freeze_refuses_a_float_model",
    "tests/test_compile_cli.py::test_export_mistakes_are_one_line",
    "tests/interop/test_qonnx_cli.py::test_import_export_simulate_round_trip",
    "tests/test_bad_input_process.py::test_bad_input_in_a_shell",
}

# Tool-dependent tiers by where a test lives (tests mirror the package): -m "not tvm" skips
# every test that compiles with TVM, and so on. The two GPU tests need nvcc (and a device to
# run); they are named here since they sit with the other TVM tests.
TOOL_DIRS: dict[str, str] = {
    "tests/backends/hls4ml/": "hls",
    "tests/interop/test_qonnx_hls4ml.py": "hls",
    "tests/backends/tvm/": "tvm",
    "tests/backends/rtl/": "rtl",
}
GPU_TESTS: set[str] = {
    "tests/backends/tvm/test_tvm.py::test_gpu_artifact_holds_cuda_source_and_ptx",
    "tests/backends/tvm/test_tvm.py::test_gpu_kernels_are_bit_exact_on_a_gpu",
}

# Files sharing one session fixture (tests/bad_inputs.py: a trained run and its artifacts):
# one pytest-xdist worker runs them all, so the fixture is built once a session.
SHARED_FIXTURE_FILES = ("tests/test_bad_input_",)


def shares_a_fixture(item: pytest.Item) -> bool:
    """Whether the test uses one of our fixtures that outlives a test (module, class,
    package or session scope): the tests sharing it must stay on one worker to build it
    once. pytest's own (tmp_path_factory and the like) do not count: they cost nothing."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope != "function" and defs[-1].func.__module__.startswith("tests")
        for defs in info.name2fixturedefs.values()
    )


def xdist_group(item: pytest.Item) -> str:
    """The pytest-xdist group of a test (``--dist loadgroup``): the prefix of the files it
    shares a session fixture with, its file where it uses one of the file's longer-lived
    fixtures (built once), else the test itself. Tests that build their own artifacts (a
    Verilator model, an HLS C simulation) then spread over both workers instead of queueing
    behind each other on one: a file of ten Verilator builds ran minutes after the rest."""
    path = item.nodeid.split("::")[0]
    shared = next((p for p in SHARED_FIXTURE_FILES if path.startswith(p)), None)
    if shared:
        return shared
    return path if shares_a_fixture(item) else item.nodeid


# The longest tests of `make test` (its --durations list), longest first: they start first,
# so pytest-xdist does not leave one worker finishing a two-minute build after the other
# has run out of work (longest-processing-time-first scheduling). Other tests keep their
# order behind them. Keys are test functions; every case of one starts early.
LONGEST_FIRST: tuple[str, ...] = (
    "tests/backends/hls4ml/test_fpga.py::test_zoo_model_csim_is_bit_exact",
    "tests/backends/tvm/test_tvm.py::test_zoo_model_is_bit_exact",
    "tests/backends/rtl/test_rtl.py::test_small_cnn_rtl_is_bit_exact_under_verilator",
    "tests/backends/rtl/test_rtl.py::test_jet_mlp_rtl_is_bit_exact_under_verilator",
    "tests/test_compile_cli.py::test_learned_bitwidths_meet_the_budget_and_deploy_exactly",
    "tests/backends/hls4ml/test_fpga.py::test_io_stream_csim_is_bit_exact",
    "tests/backends/rtl/test_rtl.py::test_cli_export_and_simulate_rtl",
    "tests/backends/tvm/test_tvm.py::test_parallel_schedule_is_exact_on_two_threads",
)


def start_order(item: pytest.Item) -> int:
    """The sort key putting LONGEST_FIRST's tests first, in its order."""
    test = item.nodeid.partition("[")[0]
    return LONGEST_FIRST.index(test) if test in LONGEST_FIRST else len(LONGEST_FIRST)


def apply_tiers(items: list[pytest.Item]) -> None:
    """Mark the tests above ``slow`` and by the tool they need, and group every test for
    pytest-xdist.

    Where more cases of a sweep than representatives were collected (a whole file, not a
    hand-picked case), a representative that is not among them is an error: a renamed case
    cannot leave a sweep with no fast case.
    """
    seen: dict[str, set[str]] = {}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
        test, _, case = item.nodeid.partition("[")
        for prefix, tool in TOOL_DIRS.items():
            if test.startswith(prefix):
                item.add_marker(getattr(pytest.mark, tool))
        if test in GPU_TESTS:
            item.add_marker(pytest.mark.gpu)
        if test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        keep = SWEEPS.get(test)
        if keep is None or not case:
            continue
        case = case.removesuffix("]")
        seen.setdefault(test, set()).add(case)
        if case not in keep:
            item.add_marker(pytest.mark.slow)
    items.sort(key=start_order)  # stable: the rest keep their collection order
    for test, cases in seen.items():
        missing = SWEEPS[test] - cases
        if missing and len(cases) > len(SWEEPS[test]):
            raise pytest.UsageError(f"tests/tiers.py SWEEPS: {test} has no case {sorted(missing)}")
