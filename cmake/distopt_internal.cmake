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
endif()

# distopt_internal_program(name sources...): an executable of this project.
function(distopt_internal_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE distopt::distopt distopt_warnings distopt_sanitizers)
endfunction()
