#pragma once
// claims: the verdicts of a reproduction. Each claim is named, compares a measured value with a
// bound fixed in advance (from theory or stated in the program's header comment), and prints one
// line either way:
//   [pass] <name>: <value> <= <bound>  (<why the bound>)
//   [FAIL] <name>: <value> >  <bound>  (<why the bound>)
//   [info] <name>: <value>  (not checked: <why>)
// A NaN value fails. exit_status() prints the tally and returns 0 if every checked claim held,
// 1 otherwise, for main() to return (ctest checks the exit code).
//
//   reproduce::claims c("swarm");
//   c.at_most("ring / complete final f(mu) - f*", ratio, 2.0, "a stated factor");
//   return c.exit_status();

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace reproduce {

class claims {
 public:
  explicit claims(std::string program) : program_(std::move(program)) {}

  /// value <= bound.
  bool at_most(const std::string& name, double value, double bound, const std::string& why = "") {
    return record(name, value <= bound, value, "<=", ">", bound, why);
  }
  /// value >= bound.
  bool at_least(const std::string& name, double value, double bound, const std::string& why = "") {
    return record(name, value >= bound, value, ">=", "<", bound, why);
  }
  /// low <= value <= high.
  bool within(const std::string& name, double value, double low, double high, const std::string& why = "") {
    const bool ok = value >= low && value <= high;
    std::printf("[%s] %s: %s %s [%s, %s]%s\n", ok ? "pass" : "FAIL", name.c_str(), number(value).c_str(),
                ok ? "in" : "not in", number(low).c_str(), number(high).c_str(), because(why).c_str());
    return tally(name, ok);
  }
  /// A claim that is not a comparison of one number (e.g. a run diverged); `detail` says what was seen.
  bool holds(const std::string& name, bool ok, const std::string& detail) {
    std::printf("[%s] %s: %s\n", ok ? "pass" : "FAIL", name.c_str(), detail.c_str());
    return tally(name, ok);
  }
  /// A measurement reported next to the claims but not checked; `why` says why not.
  void report(const std::string& name, double value, const std::string& why) {
    std::printf("[info] %s: %s  (not checked: %s)\n", name.c_str(), number(value).c_str(), why.c_str());
  }

  /// Prints the tally; 0 if every checked claim held, else 1.
  int exit_status() const {
    if (failed_.empty()) {
      std::printf("%s: all %d claims hold\n", program_.c_str(), checked_);
      return 0;
    }
    std::string names;
    for (const auto& n : failed_) names += "\n  " + n;
    std::printf("%s: %zu of %d claims FAILED:%s\n", program_.c_str(), failed_.size(), checked_, names.c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %zu of %d claims FAILED (see [FAIL] above)\n", program_.c_str(), failed_.size(),
                 checked_);
    return 1;
  }

 private:
  static std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
  }
  static std::string because(const std::string& why) { return why.empty() ? "" : "  (" + why + ")"; }

  bool record(const std::string& name, bool ok, double value, const char* holds_op, const char* fails_op, double bound,
              const std::string& why) {
    std::printf("[%s] %s: %s %s %s%s\n", ok ? "pass" : "FAIL", name.c_str(), number(value).c_str(),
                ok ? holds_op : fails_op, number(bound).c_str(), because(why).c_str());
    return tally(name, ok);
  }
  bool tally(const std::string& name, bool ok) {
    ++checked_;
    if (!ok) failed_.push_back(name);
    return ok;
  }

  std::string program_;
  int checked_ = 0;
  std::vector<std::string> failed_;
};

}  // namespace reproduce
