# Installs the build tree into a fresh prefix and checks what landed there.
#   cmake -DBUILD_DIR=<build> -DPREFIX=<prefix> -DHEADERS_FILE=<file> -DVERSION=<x.y.z> -P install.cmake
# HEADERS_FILE lists the headers of the header sets of distopt's library targets
# (one per line, relative to include/); exactly these must be installed under
# <prefix>/include.
# distopt is header-only, so nothing needs to be built before installing.

cmake_minimum_required(VERSION 3.24)  # this -P script runs with the project's policies
foreach(var IN ITEMS BUILD_DIR PREFIX HEADERS_FILE VERSION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install.cmake: pass -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" RESULT_VARIABLE failed)
if(failed)
  message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed: ${failed}")
endif()

set(cmake_dir "${PREFIX}/share/distopt/cmake")
foreach(file IN ITEMS distopt-config.cmake distopt-config-version.cmake distopt-targets.cmake)
  if(NOT EXISTS "${cmake_dir}/${file}")
    message(FATAL_ERROR "the install has no ${cmake_dir}/${file}")
  endif()
endforeach()

# The version file reports this version (the consumer tests check what it accepts).
set(PACKAGE_FIND_VERSION "${VERSION}")
string(REPLACE "." ";" parts "${VERSION}")
list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
list(GET parts 2 PACKAGE_FIND_VERSION_PATCH)
include("${cmake_dir}/distopt-config-version.cmake")
if(NOT PACKAGE_VERSION STREQUAL VERSION OR NOT PACKAGE_VERSION_EXACT)
  message(FATAL_ERROR "distopt-config-version.cmake says version '${PACKAGE_VERSION}', expected ${VERSION}")
endif()

file(STRINGS "${HEADERS_FILE}" expected)
file(GLOB_RECURSE installed RELATIVE "${PREFIX}/include" "${PREFIX}/include/*")
list(SORT expected)
list(SORT installed)
if(NOT installed STREQUAL expected)
  set(missing ${expected})
  list(REMOVE_ITEM missing ${installed})
  set(extra ${installed})
  list(REMOVE_ITEM extra ${expected})
  message(FATAL_ERROR "installed headers differ from distopt's header set: missing '${missing}', extra '${extra}'")
endif()
list(LENGTH installed count)
message(STATUS "installed distopt ${PACKAGE_VERSION} (${count} headers) into ${PREFIX}")
