#!/usr/bin/env bash
# Runs bench/compare/allreduce_mpi with 2 and then 4 ranks on this machine and
# prints its tables: raw MPI_Allreduce vs mpi_transport's native path vs distopt's
# ring over mpi_transport, 4 KiB to 64 MiB. Use a Release build for numbers.
#
#   bench/compare/allreduce_mpi.sh [build dir (default: build)] [extra allreduce_mpi options]
set -euo pipefail
build="${1:-build}"
shift || true
program="$build/bench/allreduce_mpi"
[ -x "$program" ] || { echo "allreduce_mpi.sh: $program not found; build target allreduce_mpi (needs MPI)" >&2; exit 1; }
# Open MPI: allow root (containers) and more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
echo "machine: $(nproc) cores"
for np in 2 4; do
  mpiexec -n "$np" "$program" "$@"
done
