# Generated sources that are committed (included from CMakeLists.txt):
#   src/kernels/sm90/wgmma_ops.cuh   written by scripts/gen_wgmma.py
# They are committed so that a build needs no Python. A CPU test runs the generator with
# --check, which fails when the committed file is not exactly its output (a hand edit, or a
# generator change that was not regenerated). Without a Python 3 interpreter the test is not
# registered.
if(FLARE_BUILD_TESTS)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    add_test(NAME flare_generated_files
      COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/../scripts/gen_wgmma.py --check)
  else()
    message(STATUS "flare: no Python 3 interpreter: test flare_generated_files not registered")
  endif()
endif()
