#pragma once
// All compressors. Include this or one compressor's header; never detail/.
#include "distopt/compress/bf16.hpp"
#include "distopt/compress/contraction.hpp"  // delta_bound(c, n): the contraction a compressor guarantees
#include "distopt/compress/ef21.hpp"
#include "distopt/compress/error_feedback.hpp"
#include "distopt/compress/fp16.hpp"
#include "distopt/compress/identity.hpp"
#include "distopt/compress/lattice.hpp"
#include "distopt/compress/majority_sign.hpp"
#include "distopt/compress/min_max.hpp"
#include "distopt/compress/natural.hpp"
#include "distopt/compress/one_bit.hpp"
#include "distopt/compress/power_sgd.hpp"  // also brings collective/ring_allreduce.hpp (its own collective)
#include "distopt/compress/qsgd.hpp"
#include "distopt/compress/random_k.hpp"  // random_k, random_k_biased, random_k_shared, random_keep
#include "distopt/compress/rounding.hpp"
#include "distopt/compress/scaled.hpp"
#include "distopt/compress/scaled_sign.hpp"
#include "distopt/compress/sign.hpp"
#include "distopt/compress/terngrad.hpp"
#include "distopt/compress/threshold.hpp"
#include "distopt/compress/top_k.hpp"
