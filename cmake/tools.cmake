# Programs installed to bin/ next to the libraries (included from CMakeLists.txt):
#   flare-info   the library's version and build configuration, the visible GPUs and the kernel
#                family flare runs on each (tools/flare_info.cpp);
#   flare_bench  (defined in CMakeLists.txt, FLARE_BUILD_BENCH) forward-attention throughput.
# Both link libflare.so; the CUDA runtime is linked statically into flare-info so that it
# starts, and reports, on a machine without a CUDA driver.
option(FLARE_BUILD_TOOLS "Build flare-info" ON)
if(FLARE_BUILD_TOOLS)
  add_executable(flare_info tools/flare_info.cpp)
  set_target_properties(flare_info PROPERTIES OUTPUT_NAME flare-info)
  target_link_libraries(flare_info PRIVATE flare CUDA::cudart_static)
  target_compile_options(flare_info PRIVATE -Wall -Wextra)
endif()
