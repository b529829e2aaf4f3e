# Python bindings: the nanobind extension flare._flare, statically linked against flare_static.
# Built by scikit-build-core (pyproject.toml) with -DFLARE_BUILD_PYTHON=ON; `pip install .`.
option(FLARE_BUILD_PYTHON "Build the Python extension module flare._flare (nanobind)" OFF)
if(NOT FLARE_BUILD_PYTHON)
  return()
endif()

# One line up front in `pip install -v .`: which kernels this build compiles (each unit is
# one (arch, dtype, head dim); ninja's [n/N] lines follow as they compile).
set(flare_py_units 0)
foreach(arch IN LISTS FLARE_ARCHS)
  string(REGEX REPLACE "[^0-9]" "" flare_py_arch_num "${arch}")
  list(LENGTH FLARE_KERNEL_SOURCES_${flare_py_arch_num} flare_py_n)
  math(EXPR flare_py_units "${flare_py_units} + ${flare_py_n}")
endforeach()
message(STATUS "flare: Python extension, kernel units to compile: ${flare_py_units} (FLARE_ARCHS="
               "${FLARE_ARCHS}, FLARE_DTYPES=${FLARE_DTYPES}, FLARE_HEAD_DIMS=${FLARE_HEAD_DIMS}); "
               "README.md gives the build times")

find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
if(NOT nanobind_ROOT)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir
    OUTPUT_STRIP_TRAILING_WHITESPACE
    OUTPUT_VARIABLE nanobind_ROOT
    RESULT_VARIABLE flare_nanobind_rc)
  if(NOT flare_nanobind_rc EQUAL 0)
    message(FATAL_ERROR "FLARE_BUILD_PYTHON: `${Python_EXECUTABLE} -m nanobind --cmake_dir` "
                        "failed; install nanobind (pip install nanobind)")
  endif()
endif()
find_package(nanobind CONFIG REQUIRED)

nanobind_add_module(_flare NB_STATIC python/src/flare_module.cpp)
target_link_libraries(_flare PRIVATE flare_static CUDA::cudart_static)
# src/ for the merge's host checks (api/merge_validate.h), compiled into flare_static.
target_include_directories(_flare PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
# The build's kernel set, reported as flare.build_config.
string(REPLACE ";" "," flare_py_archs "${FLARE_ARCHS}")
string(REPLACE ";" "," flare_py_hdims "${FLARE_HEAD_DIMS}")
string(REPLACE ";" "," flare_py_dtypes "${FLARE_DTYPES}")
target_compile_definitions(_flare PRIVATE
  FLARE_PY_ARCHS="${flare_py_archs}"
  FLARE_PY_HEAD_DIMS="${flare_py_hdims}"
  FLARE_PY_DTYPES="${flare_py_dtypes}")
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  # Keep the statically linked flare / cudart symbols private to the module.
  target_link_options(_flare PRIVATE "LINKER:--exclude-libs,ALL")
endif()

# Into the wheel: flare/_flare*.so next to the Python sources (component "python", the only
# one pyproject.toml installs).
install(TARGETS _flare LIBRARY DESTINATION flare COMPONENT python)
install(DIRECTORY python/flare/ DESTINATION flare COMPONENT python
  FILES_MATCHING PATTERN "*.py" PATTERN "*.pyi" PATTERN "py.typed"
  PATTERN "__pycache__" EXCLUDE)
