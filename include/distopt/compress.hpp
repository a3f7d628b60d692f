#pragma once
// All compressors. Include this or one compressor's header; never detail/.
#include "distopt/compress/identity.hpp"
#include "distopt/compress/error_feedback.hpp"
