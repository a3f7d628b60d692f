#pragma once
// All topologies. Include this or one topology's header; never detail/.
//  centralized (exchange gradients): allreduce, parameter_server, compressed_parameter_server
//  gossip (exchange models; topology/gossip.hpp): ring, torus, exponential, hypercube,
//    complete, custom (static graphs); one_peer_exponential, random_pairwise<Base>
//    (time-varying); gossip<G, Scheme> picks the exchange scheme (distopt::mixing).
#include "distopt/graph.hpp"
#include "distopt/topology/allreduce.hpp"
#include "distopt/topology/complete.hpp"
#include "distopt/topology/custom.hpp"
#include "distopt/topology/exponential.hpp"
#include "distopt/topology/gossip.hpp"
#include "distopt/topology/hypercube.hpp"
#include "distopt/topology/one_peer_exponential.hpp"
#include "distopt/topology/parameter_server.hpp"
#include "distopt/topology/random_pairwise.hpp"
#include "distopt/topology/ring.hpp"
#include "distopt/topology/torus.hpp"
