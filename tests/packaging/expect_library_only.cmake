# distopt_expect_library_only(<distopt source dir>): after add_subdirectory or
# FetchContent_MakeAvailable, distopt must have added its library and nothing
# else — DISTOPT_BUILD_TESTS/BENCH/EXAMPLES default to OFF when distopt is not
# the top-level project.
function(distopt_expect_library_only source_dir)
  foreach(option IN ITEMS DISTOPT_BUILD_TESTS DISTOPT_BUILD_BENCH DISTOPT_BUILD_EXAMPLES)
    if(NOT DEFINED ${option} OR ${option})
      message(FATAL_ERROR "${option} is '${${option}}'; it must default to OFF when distopt is a subproject")
    endif()
  endforeach()
  # Its targets are the public header-only libraries (each with a header set),
  # none of the project's own helpers (distopt_warnings, ...), programs or tests.
  get_property(targets DIRECTORY "${source_dir}" PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirectories DIRECTORY "${source_dir}" PROPERTY SUBDIRECTORIES)
  get_property(tests DIRECTORY "${source_dir}" PROPERTY TESTS)
  set(not_libraries "")
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    get_target_property(headers ${target} HEADER_SET)
    if(NOT type STREQUAL "INTERFACE_LIBRARY" OR NOT headers)
      list(APPEND not_libraries ${target})
    endif()
  endforeach()
  if(not_libraries OR subdirectories OR tests)
    message(FATAL_ERROR "distopt as a subproject added targets '${not_libraries}' that are not public libraries, "
                        "subdirectories '${subdirectories}' and tests '${tests}'; expected none")
  endif()
  message(STATUS "distopt as a subproject: libraries '${targets}', nothing else")
  if(NOT TARGET distopt::distopt)
    message(FATAL_ERROR "distopt as a subproject did not define distopt::distopt")
  endif()
endfunction()
