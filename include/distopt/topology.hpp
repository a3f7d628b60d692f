#pragma once
// All topologies. Include this or one topology's header; never detail/.
#include "distopt/topology/allreduce.hpp"
