// Part of the find_package consumer when the component `data` is installed:
// distopt::data must bring zlib. Reading a missing file goes through gzopen and
// must throw config_error naming the file.

#include <cstdio>
#include <string>

#include <distopt/data/idx.hpp>

bool data_component_works() {
  const std::string path = "/nonexistent/distopt-packaging-test.idx";
  try {
    distopt::data::read_idx(path);
  } catch (const distopt::config_error& e) {
    if (std::string(e.what()).find(path) != std::string::npos) return true;
    std::fprintf(stderr, "consumer: read_idx(%s) threw '%s', which does not name the file\n", path.c_str(), e.what());
    return false;
  }
  std::fprintf(stderr, "consumer: read_idx(%s) did not throw\n", path.c_str());
  return false;
}
