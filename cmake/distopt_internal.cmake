# Settings for the project's own tests, benchmarks and examples (never exported).

# distopt_warnings: -Wall -Wextra -Wpedantic, as errors, so warnings stay at zero.
add_library(distopt_warnings INTERFACE)
target_compile_options(distopt_warnings INTERFACE -Wall -Wextra -Wpedantic -Werror)

# distopt_sanitizers: the sanitizers chosen with DISTOPT_SANITIZE.
add_library(distopt_sanitizers INTERFACE)
if(DISTOPT_SANITIZE)
  target_compile_options(distopt_sanitizers INTERFACE -fsanitize=${DISTOPT_SANITIZE} -fno-omit-frame-pointer
                                                      -fno-sanitize-recover=all)
  target_link_options(distopt_sanitizers INTERFACE -fsanitize=${DISTOPT_SANITIZE})
  if(DISTOPT_SANITIZE MATCHES "undefined" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Not part of gcc's -fsanitize=undefined (it is of clang's): float -> int conversions out
    # of range, the undefined behaviour the decoder fuzzers found in the quantizers.
    target_compile_options(distopt_sanitizers INTERFACE -fsanitize=float-cast-overflow)
    target_link_options(distopt_sanitizers INTERFACE -fsanitize=float-cast-overflow)
  endif()
endif()

# distopt_internal_program(name sources...): an executable of this project.
function(distopt_internal_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE distopt::distopt distopt_warnings distopt_sanitizers)
endfunction()
