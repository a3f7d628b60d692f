#pragma once
// All local-steps policies. Include this or one policy's header; never detail/.
#include "distopt/local_steps/fixed.hpp"
#include "distopt/local_steps/geometric.hpp"
#include "distopt/local_steps/post_local.hpp"
