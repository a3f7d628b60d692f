# Shared set-up of the README's commands: installs the Debian packages distopt
# needs when any is missing (quiet when all are there), then configures a build.
# Source it; do not run it.

distopt_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Packages every build needs; extra ones may be passed to distopt_install.
# libtorch-dev, python3-torch, pybind11-dev and python3-dev: distopt::torch, the Python module and their tests.
distopt_packages=(cmake ninja-build g++ libeigen3-dev doctest-dev libbenchmark-dev zlib1g-dev libcli11-dev
                  dataset-fashion-mnist liblinear-tools libopenmpi-dev openmpi-bin libboost-dev libssl-dev
                  libtorch-dev python3-torch pybind11-dev python3-dev)

# distopt_install [package...]: apt-get installs those of the packages that are missing.
distopt_install() {
  local wanted=("${distopt_packages[@]}" "$@") missing=()
  local p
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "distopt: installing missing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# distopt_install_fuzzing: distopt_install plus clang++-14 and its libFuzzer runtime (scripts/fuzz).
distopt_install_fuzzing() { distopt_install clang-14 libclang-rt-14-dev; }

# distopt_configure build_dir [cmake args...]: configures with CMake + Ninja.
distopt_configure() {
  local dir="$1"
  shift
  cmake -S "$distopt_root" -B "$dir" -G Ninja "$@" >/dev/null
}

distopt_jobs() { nproc 2>/dev/null || echo 2; }
