// staleness::bounded with topology::allreduce is rejected by a static_assert that says
// which topologies support it: an allreduce is entered by every worker together.
// Control (no DISTOPT_COMPILE_FAIL): the same policies with the parameter server compile.
// expect: staleness::bounded and staleness::asynchronous need topology::parameter_server

#include <distopt/algorithms.hpp>
#include <distopt/core/transport_ref.hpp>

#ifdef DISTOPT_COMPILE_FAIL
using where = distopt::topology::allreduce;
#else
using where = distopt::topology::parameter_server;
#endif

using ssp = distopt::optimizer<distopt::compress::qsgd<8>, where, distopt::staleness::bounded<2>,
                               distopt::local_steps::every_step>;

void train(distopt::transport_ref t) {
  ssp opt(t, Eigen::VectorXf::Zero(3), {.learning_rate = 0.1f});
  opt.step(Eigen::VectorXf::Ones(3));
  opt.finish();
}
