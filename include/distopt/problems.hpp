#pragma once
// Model problems for tests, benchmarks and examples. Include this or one header; never detail/.
#include "distopt/data/partition.hpp"
#include "distopt/problems/least_squares.hpp"
#include "distopt/problems/logistic_regression.hpp"
#include "distopt/problems/mlp.hpp"
#include "distopt/problems/synthetic.hpp"
