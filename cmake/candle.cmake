# flare_candle: candle-flash-attn's `run_mha` (src/candle/flare_candle.h) served by flare, so a
# candle build links this library instead of compiling FlashAttention-2 kernels
# (docs/candle.md). Included from CMakeLists.txt.
#   - flare_candle (shared, links libflare) and flare_candle_static (run_mha alone; link it
#     before libflare_static.a and the CUDA runtime), installed with flare's libraries, the
#     header next to flare.h;
#   - tests/cpu/test_candle_run_mha.cpp: the refusals and their messages (no GPU needed), as
#     flare_tests_candle.

set(_flare_candle_sources ${CMAKE_CURRENT_LIST_DIR}/../src/candle/run_mha.cpp)

function(flare_candle_configure target)
  target_include_directories(${target}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
           $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/src/candle>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  set_target_properties(${target} PROPERTIES CXX_VISIBILITY_PRESET hidden)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
endfunction()

add_library(flare_candle SHARED ${_flare_candle_sources})
flare_candle_configure(flare_candle)
target_link_libraries(flare_candle PRIVATE flare CUDA::cudart)
set_target_properties(flare_candle PROPERTIES VERSION ${PROJECT_VERSION}
                                              SOVERSION ${PROJECT_VERSION_MAJOR})

add_library(flare_candle_static STATIC ${_flare_candle_sources})
flare_candle_configure(flare_candle_static)
target_link_libraries(flare_candle_static PUBLIC flare_static)

install(TARGETS flare_candle flare_candle_static
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${CMAKE_CURRENT_LIST_DIR}/../src/candle/flare_candle.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/flare)

if(FLARE_BUILD_TESTS AND TARGET flare_tests_cpu)
  add_executable(flare_tests_candle ${CMAKE_CURRENT_LIST_DIR}/../tests/cpu/test_candle_run_mha.cpp)
  target_link_libraries(flare_tests_candle PRIVATE flare_candle flare CUDA::cudart GTest::gtest_main)
  add_test(NAME flare_tests_candle COMMAND flare_tests_candle)
endif()
