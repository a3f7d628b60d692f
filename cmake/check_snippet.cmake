# Keeps README.md's quickstart snippet identical to the compiled example.
#
#   cmake -DEXAMPLE=examples/quickstart.cpp -DREADME=README.md -P cmake/check_snippet.cmake
#       fails unless README's first ```cpp block is the example's snippet (ctest: readme_snippet)
#   cmake -DEXAMPLE=... -DREADME=... -DUPDATE=ON -P cmake/check_snippet.cmake
#       rewrites that block from the example (what scripts/sync-readme runs)
#
# The snippet: the lines strictly between the two lines of EXAMPLE that hold only
# `// [quickstart]` (after indentation). They are dedented by the indentation of
# the opening marker line: exactly that many leading spaces are removed from every
# line, and a non-blank line indented less than the marker is an error (so the
# rule never cuts code). Trailing whitespace is dropped. The snippet ends with a
# newline.
#
# The README block: the body of the first fenced block that opens with a line
# "```cpp" and closes with the next line starting with "```". Its body must equal
# the snippet byte for byte.

cmake_minimum_required(VERSION 3.24)  # this -P script runs with the project's policies

foreach(var IN ITEMS EXAMPLE README)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_snippet.cmake: pass -D${var}=<path>")
  endif()
endforeach()
set(marker "// [quickstart]")

# --- The snippet from the example -------------------------------------------------
file(READ "${EXAMPLE}" example)
string(FIND "${example}" "${marker}" open)
string(FIND "${example}" "${marker}" close REVERSE)
if(open EQUAL -1 OR open EQUAL close)
  message(FATAL_ERROR "${EXAMPLE}: expected two lines '${marker}' around the README snippet")
endif()
string(LENGTH "${marker}" marker_length)
math(EXPR after_open "${open} + ${marker_length}")
math(EXPR between_length "${close} - ${after_open}")
string(SUBSTRING "${example}" ${after_open} ${between_length} between)
string(FIND "${between}" "${marker}" third)
if(NOT third EQUAL -1)
  message(FATAL_ERROR "${EXAMPLE}: more than two '${marker}' markers")
endif()

# Both markers must be alone on their lines: "\n<spaces>// [quickstart]\n".
string(SUBSTRING "${example}" 0 ${open} before_open)
string(FIND "${before_open}" "\n" open_line REVERSE)
math(EXPR indent_start "${open_line} + 1")
math(EXPR indent_length "${open} - ${indent_start}")
string(SUBSTRING "${example}" ${indent_start} ${indent_length} indent)
if(NOT indent MATCHES "^ *$" OR NOT between MATCHES "^\n.*\n *$")
  message(FATAL_ERROR "${EXAMPLE}: each '${marker}' must be alone on its line, indented with spaces")
endif()
string(REGEX REPLACE "^\n" "" body "${between}")  # from the line after the opening marker
string(REGEX REPLACE "\n *$" "\n" body "${body}")  # to the end of the line before the closing one
if(body STREQUAL "\n" OR body STREQUAL "")
  message(FATAL_ERROR "${EXAMPLE}: the '${marker}' region is empty")
endif()

# Dedent by the marker's indentation; refuse lines indented less than the marker.
string(REGEX REPLACE "[ \t]+\n" "\n" body "${body}")
string(LENGTH "${indent}" indent_width)
set(shallower "")
if(indent_width GREATER 0)
  math(EXPR last "${indent_width} - 1")
  foreach(width RANGE 0 ${last})
    string(REPEAT " " ${width} spaces)
    string(REGEX MATCH "\n${spaces}[^ \n][^\n]*" line "\n${body}")
    if(line)
      string(STRIP "${line}" line)
      message(FATAL_ERROR "${EXAMPLE}: a line of the '${marker}' region is indented less than its opening "
                          "marker (${indent_width} spaces), so it cannot be dedented: '${line}'")
    endif()
  endforeach()
  string(REPLACE "\n${indent}" "\n" body "\n${body}")
  string(SUBSTRING "${body}" 1 -1 body)
endif()

# --- The first ```cpp block of the README ----------------------------------------
set(fence_open "```cpp\n")
set(readme_error "")
if(EXISTS "${README}")
  file(READ "${README}" readme)
  string(FIND "\n${readme}" "\n${fence_open}" fence)  # at a line start; the "\n" added shifts by one
  if(fence EQUAL -1)
    set(readme_error "${README} has no \"```cpp\" block")
  else()
    string(LENGTH "${fence_open}" fence_length)
    math(EXPR block_start "${fence} + ${fence_length}")
    string(SUBSTRING "${readme}" ${block_start} -1 rest)
    string(FIND "\n${rest}" "\n```" block_length)  # the closing fence, at a line start
    if(block_length EQUAL -1)
      set(readme_error "${README}: the first \"```cpp\" block is not closed")
    else()
      string(SUBSTRING "${readme}" ${block_start} ${block_length} block)
    endif()
  endif()
else()
  set(readme_error "${README} does not exist")
endif()

if(UPDATE)
  if(readme_error)
    message(FATAL_ERROR "${readme_error}; add an empty block (a line \"```cpp\", then a line \"```\") "
                        "where the quickstart snippet belongs, then run this again")
  endif()
  if(block STREQUAL body)
    message(STATUS "${README}: the quickstart snippet is up to date")
  else()
    string(SUBSTRING "${readme}" 0 ${block_start} head)
    math(EXPR tail_start "${block_start} + ${block_length}")
    string(SUBSTRING "${readme}" ${tail_start} -1 tail)
    file(WRITE "${README}" "${head}${body}${tail}")
    message(STATUS "${README}: rewrote the first ```cpp block from ${EXAMPLE}")
  endif()
  return()
endif()

if(readme_error)
  message(FATAL_ERROR "${readme_error}; its first ```cpp block must be the '${marker}' region of ${EXAMPLE} "
                      "(run scripts/sync-readme)")
endif()
if(NOT block STREQUAL body)
  message(NOTICE "--- expected (the '${marker}' region of ${EXAMPLE}):\n${body}--- found:\n${block}---")
  message(FATAL_ERROR "${README}: the first ```cpp block differs from the '${marker}' region of ${EXAMPLE}; "
                      "run scripts/sync-readme")
endif()
message(STATUS "${README}: the quickstart snippet matches ${EXAMPLE}")
