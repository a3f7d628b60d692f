#pragma once
// All collectives, written once against transport_ref. Include this or one header; never detail/.
#include "distopt/collective/allgather.hpp"
#include "distopt/collective/broadcast.hpp"
#include "distopt/collective/ring_allreduce.hpp"
