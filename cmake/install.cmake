# Install (included from CMakeLists.txt after every installed target is defined):
#   include/flare/*                       the C and C++ headers
#   lib/libflare.so.*, lib/libflare_static.a (and lib/libflare.a, a link to it, so that
#                                          `pkg-config --static flare` / -lflare finds it)
#   lib/libflare_cp.so.*                  when FLARE_BUILD_CP (NCCL found)
#   bin/flare-info, bin/flare_bench       when built
#   lib/cmake/flare/                      find_package(flare): flare::flare, flare::flare_static,
#                                          flare::flare_cp (component cp)
#   lib/pkgconfig/flare.pc, flare_cp.pc   pkg-config
#
# Run-time search paths, so that nothing needs LD_LIBRARY_PATH: the installed programs carry
# RUNPATH $ORIGIN/../lib, libflare_cp carries $ORIGIN (it needs libflare.so from the same
# directory), and `pkg-config --libs flare` adds -Wl,-rpath,<libdir> for the consumer. CUDA
# and NCCL directories outside the linker's default ones are kept in the RUNPATHs too
# (INSTALL_RPATH_USE_LINK_PATH).
include(CMakePackageConfigHelpers)

set(_flare_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/flare)
file(RELATIVE_PATH _flare_bin_to_lib ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})

install(DIRECTORY include/flare DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(_flare_export_targets flare flare_static)
if(TARGET flare_cp)
  list(APPEND _flare_export_targets flare_cp)
endif()

# Every other shared library of this directory (flare_cp, and any added later in
# CMakeLists.txt) links libflare.so and is installed beside it: RUNPATH $ORIGIN. Deferred to the
# end of the directory so that libraries defined after this file are covered too.
function(_flare_library_runpaths)
  get_property(_targets DIRECTORY PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_type ${_t} TYPE)
    if(_type STREQUAL "SHARED_LIBRARY" AND NOT _t STREQUAL "flare")
      set_target_properties(${_t} PROPERTIES INSTALL_RPATH "$ORIGIN" INSTALL_RPATH_USE_LINK_PATH ON)
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL _flare_library_runpaths)
install(TARGETS ${_flare_export_targets} EXPORT flareTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The prefix is read at install time (cmake --install --prefix may differ from the configured one).
install(CODE "file(CREATE_LINK libflare_static.a
  \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libflare.a\" SYMBOLIC)")

foreach(_prog flare_info flare_bench)
  if(TARGET ${_prog})
    set_target_properties(${_prog} PROPERTIES INSTALL_RPATH "$ORIGIN/${_flare_bin_to_lib}"
                                              INSTALL_RPATH_USE_LINK_PATH ON)
    install(TARGETS ${_prog} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# CMake package.
install(EXPORT flareTargets NAMESPACE flare:: DESTINATION ${_flare_cmake_dir})
configure_package_config_file(cmake/flareConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/flareConfig.cmake
  INSTALL_DESTINATION ${_flare_cmake_dir})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/flareConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/flareConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/flareConfigVersion.cmake
  DESTINATION ${_flare_cmake_dir})

# pkg-config. Libs.private of flare.pc is what a static link of libflare.a needs besides the
# archive: the static CUDA runtime (and the system libraries it uses) and the C++ runtime.
set(FLARE_PC_CUDA_LIBDIR ${CUDAToolkit_LIBRARY_DIR})
configure_file(cmake/flare.pc.in ${CMAKE_CURRENT_BINARY_DIR}/flare.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/flare.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET flare_cp)
  get_filename_component(FLARE_PC_NCCL_LIBDIR ${FLARE_NCCL_LIBRARY} DIRECTORY)
  set(FLARE_PC_NCCL_INCLUDEDIR ${FLARE_NCCL_INCLUDE_DIR})
  configure_file(cmake/flare_cp.pc.in ${CMAKE_CURRENT_BINARY_DIR}/flare_cp.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/flare_cp.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()

# The package's target names also inside a build that includes flare (add_subdirectory,
# FetchContent, the in-tree examples).
add_library(flare::flare ALIAS flare)
add_library(flare::flare_static ALIAS flare_static)
if(TARGET flare_cp)
  add_library(flare::flare_cp ALIAS flare_cp)
endif()
