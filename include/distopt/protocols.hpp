#pragma once
// The protocols: what a (Topology, Staleness) pair runs each round (protocols/select.hpp).

#include "distopt/protocols/async_gossip.hpp"
#include "distopt/protocols/centralized.hpp"
#include "distopt/protocols/gossip.hpp"
#include "distopt/protocols/parameter_server_round.hpp"
#include "distopt/protocols/select.hpp"
#include "distopt/protocols/stale_server.hpp"
