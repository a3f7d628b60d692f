#pragma once
// All staleness policies. Include this or one policy's header; never detail/.
#include "distopt/staleness/asynchronous.hpp"
#include "distopt/staleness/bounded.hpp"
#include "distopt/staleness/synchronous.hpp"
