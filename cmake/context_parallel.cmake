# Context parallelism (included from CMakeLists.txt when present).
#   - flare_cp: the NCCL library (include/flare/flare_cp.hpp, src/cp/context_parallel.cpp),
#     built only with FLARE_BUILD_CP, which defaults to ON when
#     NCCL is found (CUDA toolkit directories, NCCL_ROOT / NCCL_HOME, or the system).
#   - the tests that need no NCCL: the schedule on the CPU (tests/cpu/test_cp_schedule.cpp) and
#     the single-GPU simulation (tests/gpu/test_cp_sim.cpp), added to the test executables.

set(_flare_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT}
    ${CUDAToolkit_TARGET_DIR})
find_path(FLARE_NCCL_INCLUDE_DIR nccl.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_flare_nccl_hints}
  PATH_SUFFIXES include)
find_library(FLARE_NCCL_LIBRARY NAMES nccl libnccl.so.2
  HINTS ${CUDAToolkit_LIBRARY_DIR} ${_flare_nccl_hints}
  PATH_SUFFIXES lib lib64)
if(FLARE_NCCL_INCLUDE_DIR AND FLARE_NCCL_LIBRARY)
  set(_flare_nccl_found ON)
else()
  set(_flare_nccl_found OFF)
endif()
option(FLARE_BUILD_CP "Build flare_cp, context-parallel attention over NCCL" ${_flare_nccl_found})

if(FLARE_BUILD_CP)
  if(NOT _flare_nccl_found)
    message(FATAL_ERROR "FLARE_BUILD_CP is ON but NCCL was not found (nccl.h: "
                        "${FLARE_NCCL_INCLUDE_DIR}, library: ${FLARE_NCCL_LIBRARY}); set NCCL_ROOT "
                        "or FLARE_BUILD_CP=OFF")
  endif()
  message(STATUS "flare: context parallelism with NCCL ${FLARE_NCCL_LIBRARY}")
  find_package(Threads REQUIRED)
  add_library(flare_cp SHARED src/cp/context_parallel.cpp)
  target_include_directories(flare_cp
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}> ${FLARE_NCCL_INCLUDE_DIR}
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(flare_cp PUBLIC flare CUDA::cudart ${FLARE_NCCL_LIBRARY})
  target_compile_options(flare_cp PRIVATE -Wall -Wextra)
  set_target_properties(flare_cp PROPERTIES VERSION ${PROJECT_VERSION}
                                            SOVERSION ${PROJECT_VERSION_MAJOR})
  # Installed and exported with the other libraries (cmake/install.cmake); its example is in
  # examples/CMakeLists.txt.
else()
  message(STATUS "flare: context parallelism (flare_cp) not built: FLARE_BUILD_CP is OFF")
endif()

if(FLARE_BUILD_TESTS)
  if(TARGET flare_tests_cpu)
    target_sources(flare_tests_cpu PRIVATE tests/cpu/test_cp_schedule.cpp)
  endif()
  if(TARGET flare_tests_gpu_merge)
    target_sources(flare_tests_gpu_merge PRIVATE tests/gpu/test_cp_sim.cpp)
  endif()
endif()
