#pragma once
// The umbrella header: the library, except the optional backends
// (distopt/transport/tcp.hpp, distopt/transport/mpi.hpp) and the example problems and
// data readers (distopt/problems.hpp, whose Eigen kernels would double the compile time
// of every file that includes this). Include this or a family header
// (distopt/compress.hpp, ...); never a detail/ header.

#include "distopt/algorithms.hpp"
#include "distopt/collective.hpp"
#include "distopt/compress.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/checkpoint.hpp"
#include "distopt/core/checkpoint_file.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/layout.hpp"
#include "distopt/core/options.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/statistics.hpp"
#include "distopt/core/traits.hpp"
#include "distopt/core/transport_ref.hpp"
#include "distopt/local_steps.hpp"
#include "distopt/optimizer.hpp"
#include "distopt/protocols.hpp"
#include "distopt/staleness.hpp"
#include "distopt/topology.hpp"
#include "distopt/transport/metered.hpp"
#include "distopt/transport/thread.hpp"
