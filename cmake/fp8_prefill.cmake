# FLARE_FP8_PREFILL: the Hopper FP8 prefill kernel (q, k, v e4m3; src/kernels/sm90/fwd_fp8_sm90.cuh).
# OFF (the default): no instance is compiled, validation refuses FP8 q with
# FLARE_ERROR_NOT_SUPPORTED and the planner never picks the kernel. ON, in a build whose
# FLARE_ARCHS has 90a: one instance per out dtype and head dim 64 / 128 / 256 of FLARE_HEAD_DIMS,
# and FLARE_FP8_PREFILL=1 for the host code (validation, planner, dispatcher) and the tests.
# Included by CMakeLists.txt after the kernel, host and test targets exist. The GPU tests of the
# kernel (tests/gpu/test_fp8_prefill.cpp) join flare_tests_gpu in such builds only.
option(FLARE_FP8_PREFILL "Build the Hopper FP8 prefill kernel (q, k, v e4m3)" OFF)

# Host-side checks of the kernel's layouts and of its planning: in every build.
if(TARGET flare_tests_cpu)
  target_sources(flare_tests_cpu PRIVATE tests/cpu/test_fp8_layout.cpp
    tests/cpu/test_fp8_prefill_plan.cpp)
endif()

if(FLARE_FP8_PREFILL)
  if(NOT "90a" IN_LIST FLARE_ARCHS)
    message(FATAL_ERROR "FLARE_FP8_PREFILL needs 90a in FLARE_ARCHS")
  endif()
  set(flare_fp8_prefill_sources)
  flare_sm90_instances(src/kernels/sm90/fwd_fp8_instance_sm90.cu.in fwd_fp8_sm90 "64;128;256"
                       flare_fp8_prefill_sources)
  target_sources(flare_kernels_sm90 PRIVATE ${flare_fp8_prefill_sources})
  # A spill shows as a ptxas warning (.ci/steps/fp8_prefill.sh fails on it).
  set_source_files_properties(${flare_fp8_prefill_sources} PROPERTIES
    COMPILE_OPTIONS "-Xptxas=-warn-spills")
  # PUBLIC: flare_objects (the dispatcher) and the CPU tests see it through flare_host; the GPU
  # tests link flare_static, which does not pass it on.
  target_compile_definitions(flare_host PUBLIC FLARE_FP8_PREFILL=1)
  if(TARGET flare_tests_gpu)
    target_sources(flare_tests_gpu PRIVATE tests/gpu/test_fp8_prefill.cpp)
    target_compile_definitions(flare_tests_gpu PRIVATE FLARE_FP8_PREFILL=1)
  endif()
endif()
