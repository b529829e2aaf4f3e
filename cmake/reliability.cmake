# Reliability extras (included from the top-level CMakeLists.txt when present):
#   - tests/gpu/test_reliability.cpp joins flare_tests_gpu (extremes, determinism, concurrency);
#   - FLARE_BUILD_FUZZ (OFF by default, clang only): flare_fuzz_params, a libFuzzer target over
#     the host part (read_params / validate_params / plan_forward), built with ASan + UBSan.
#     Run: ./build/flare_fuzz_params tests/fuzz/corpus -max_total_time=60
option(FLARE_BUILD_FUZZ "Build the libFuzzer target flare_fuzz_params (clang only)" OFF)

if(TARGET flare_tests_gpu AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/../tests/gpu/test_reliability.cpp)
  target_sources(flare_tests_gpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../tests/gpu/test_reliability.cpp)
  find_package(Threads REQUIRED)
  target_link_libraries(flare_tests_gpu PRIVATE Threads::Threads)
endif()

if(FLARE_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(WARNING "FLARE_BUILD_FUZZ needs clang (libFuzzer); the C++ compiler is "
                    "${CMAKE_CXX_COMPILER_ID}: flare_fuzz_params is not built. Configure with "
                    "-DCMAKE_CXX_COMPILER=clang++ or use .ci/steps/fuzz.sh.")
  else()
    set(_flare_fuzz_flags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
                          -fno-omit-frame-pointer -g -O1)
    # Compiled from the host sources directly (not flare_host): every file is instrumented.
    add_executable(flare_fuzz_params
      tests/fuzz/fuzz_params.cpp
      src/api/error.cpp
      src/api/validate.cpp
      src/api/layout_check.cpp
      src/api/validate_serving.cpp
      src/api/validate_fp8.cpp
      src/plan/plan.cpp
      src/plan/tuning.cpp
      src/kernels/sm90/tma_maps.cpp
      src/kernels/sm90/variant.cpp)
    target_include_directories(flare_fuzz_params PRIVATE
      ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_options(flare_fuzz_params PRIVATE ${_flare_fuzz_flags})
    target_link_options(flare_fuzz_params PRIVATE ${_flare_fuzz_flags})
  endif()
endif()
