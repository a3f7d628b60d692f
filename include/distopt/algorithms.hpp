#pragma once
// Named algorithms of the literature as points in the policy space. Each alias
// is one tested configuration; see shared/ALGORITHMS.md for the update rules.
//
//   distopt::algorithms::minibatch_sgd opt(t, x0, {.learning_rate = 0.1f});

#include <cstdint>

#include "distopt/compress.hpp"
#include "distopt/local_steps.hpp"
#include "distopt/optimizer.hpp"
#include "distopt/staleness.hpp"
#include "distopt/topology.hpp"

namespace distopt::algorithms {

/// Synchronous data-parallel mini-batch SGD: exact gradients averaged every step.
using minibatch_sgd =
    optimizer<compress::identity, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// Local SGD / FedAvg (Stich 2019; McMahan et al. 2017): H local steps, then model deltas averaged.
template <int H>
using local_sgd = optimizer<compress::identity, topology::allreduce, staleness::synchronous, local_steps::fixed<H>>;

/// Post-local SGD (Lin et al., ICLR 2020, arXiv 1808.07217): mini-batch SGD for the first Switch steps,
/// then local SGD with H local steps per round.
template <std::uint64_t Switch, int H>
using post_local_sgd =
    optimizer<compress::identity, topology::allreduce, staleness::synchronous, local_steps::post_local<Switch, H>>;

/// QSGD (Alistarh et al., NeurIPS 2017, arXiv 1610.02132): stochastically quantised gradients, averaged every step.
template <unsigned Bits = 8>
using qsgd_sgd = optimizer<compress::qsgd<Bits>, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// TernGrad (Wen et al., NeurIPS 2017, arXiv 1705.07878): ternary gradients.
using terngrad_sgd =
    optimizer<compress::terngrad, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// EF-signSGD (Karimireddy et al., ICML 2019, arXiv 1901.09847): scaled sign with error feedback.
/// With options.momentum, each worker's momentum is compressed with error feedback (dist-EF-SGDM,
/// Zheng et al., NeurIPS 2019; compress/error_feedback.hpp).
using ef_signsgd = optimizer<compress::error_feedback<compress::scaled_sign>, topology::allreduce,
                             staleness::synchronous, local_steps::every_step>;

/// Top-k sparsification with error feedback (Stich et al., NeurIPS 2018, arXiv 1809.07599). With
/// options.momentum this is Deep Gradient Compression's momentum correction and factor masking
/// (Lin et al., ICLR 2018, arXiv 1712.01887; compress/error_feedback.hpp).
using ef_topk_sgd = optimizer<compress::error_feedback<compress::top_k>, topology::allreduce, staleness::synchronous,
                              local_steps::every_step>;

/// signSGD with majority vote (Bernstein et al., ICML 2018, arXiv 1802.04434; ICLR 2019, arXiv
/// 1810.05291): workers send the signs of their gradients (1 bit per entry, allgathered) and step
/// by eta times the elementwise majority vote.
using signsgd_majority_vote =
    optimizer<compress::majority_sign, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// Signum with majority vote (same papers): signsgd_majority_vote whose workers vote with the sign
/// of their own momentum; run it with options.momentum = beta (0.9 in the paper).
using signum = signsgd_majority_vote;

/// Bagua's ByteGrad quantiser (min_max<8>). Here the encodings are allgathered and
/// decoded, not scatter-reduced on the compressed chunks as in Bagua.
using bytegrad = optimizer<compress::min_max<8>, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// EF21 (Richtárik, Sokolov, Fatkhullin, NeurIPS 2021, arXiv 2106.05203): each worker sends C(grad - g_i)
/// and the step follows the tracked aggregate g = mean g_i. C: a contractive compressor (default top_k).
template <class C = compress::top_k>
using ef21_sgd = optimizer<compress::ef21<C>, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// PowerSGD (Vogels, Karimireddy, Jaggi, NeurIPS 2019, arXiv 1905.13727): rank-Rank factors of each
/// matrix tensor, averaged in two ring allreduces, with warm start and error feedback.
template <unsigned Rank = 2>
using powersgd =
    optimizer<compress::power_sgd<Rank>, topology::allreduce, staleness::synchronous, local_steps::every_step>;

/// D-PSGD (Lian et al., NeurIPS 2017, arXiv 1705.09056): x <- W x - eta g over a gossip graph G
/// (ring, torus, exponential, ...). For the order x <- W (x - eta g) use
/// topology::gossip<G, mixing::exact_step_then_mix>.
template <class G = topology::ring>
using d_psgd =
    optimizer<compress::identity, topology::gossip<G, mixing::exact>, staleness::synchronous, local_steps::every_step>;

/// CHOCO-SGD (Koloskova, Stich, Jaggi, ICML 2019, arXiv 1902.00340): models compressed as differences to
/// public copies, consensus step gamma = the scheme's consensus_step (set it with the topology,
/// `{{}, {.consensus_step = 0.04f}}`), or unset the safe step derived from C's contraction and the graph
/// (topology::default_consensus_step). C: contractive (top_k, scaled qsgd, ...).
template <class C = compress::top_k, class G = topology::ring>
using choco_sgd = optimizer<C, topology::gossip<G, mixing::choco>, staleness::synchronous, local_steps::every_step>;

/// DCD-PSGD (Tang et al., NeurIPS 2018, arXiv 1803.06443): exact replicas moved by Q(W x - eta g - x).
/// Needs a high-fidelity C; unstable under aggressive compression (ALGORITHMS.md §2.6).
template <class C = compress::qsgd<8>, class G = topology::ring>
using dcd_psgd = optimizer<C, topology::gossip<G, mixing::dcd>, staleness::synchronous, local_steps::every_step>;

/// ECD-PSGD (same paper): extrapolated compression of the models.
template <class C = compress::qsgd<8>, class G = topology::ring>
using ecd_psgd = optimizer<C, topology::gossip<G, mixing::ecd>, staleness::synchronous, local_steps::every_step>;

/// DeepSqueeze (Tang et al. 2019, arXiv 1907.07346): error-compensated compression of the models,
/// consensus step gamma = the scheme's consensus_step, or unset the derived safe step (as choco_sgd).
template <class C = compress::top_k, class G = topology::ring>
using deep_squeeze = optimizer<compress::error_feedback<C>, topology::gossip<G, mixing::deep_squeeze>,
                               staleness::synchronous, local_steps::every_step>;

/// Synchronous SGD through a parameter server (topology/parameter_server.hpp): workers push C(g_i),
/// rank 0 averages in rank order and pulls back the exact average.
template <class C = compress::identity>
using ps_sgd = optimizer<C, topology::parameter_server, staleness::synchronous, local_steps::every_step>;

/// DoubleSqueeze (Tang, Yu, Lian, Zhang, Liu, ICML 2019, arXiv 1905.05957): a parameter server with
/// error-compensated compression in both directions; workers push C(g_i + e_i), the server pulls back
/// C(avg + e_s) with its own memory e_s. C: a stateless compressor (top_k, sign, qsgd, ...).
template <class C = compress::top_k>
using double_squeeze = optimizer<compress::error_feedback<C>, topology::compressed_parameter_server,
                                 staleness::synchronous, local_steps::every_step>;

/// Stale synchronous parallel SGD (Ho et al., NeurIPS 2013) through a parameter server: a worker runs at
/// most Tau rounds ahead of the slowest (protocols/stale_server.hpp). With a compressor C this
/// is the staled compressed gradient method of Khirirat, Feyzmahdavian, Johansson (arXiv 1806.06573).
template <std::uint64_t Tau, class C = compress::identity>
using ssp_sgd = optimizer<C, topology::parameter_server, staleness::bounded<Tau>, local_steps::every_step>;

/// Asynchronous SGD through a parameter server (AsySGD; Lian et al., NeurIPS 2015, arXiv 1506.08272):
/// workers push C(update) and never wait; the server applies each push as it takes it. A worker steps on
/// a model that lacks the others' latest pushes, so a learning rate tuned for synchronous SGD can
/// diverge: lower it, or set the staleness policy's staleness_aware_lr (steps scaled by 1/(1 + staleness)):
/// `async_ps_sgd<> opt(t, x0, o, {}, {}, {.staleness_aware_lr = true})`.
template <class C = compress::identity>
using async_ps_sgd = optimizer<C, topology::parameter_server, staleness::asynchronous, local_steps::every_step>;

/// AD-PSGD (Lian et al., ICML 2018, arXiv 1710.06952): after every step, non-blocking pairwise averaging
/// with a random neighbour in the graph G (protocols/async_gossip.hpp).
template <class G = topology::complete>
using ad_psgd =
    optimizer<compress::identity, topology::random_pairwise<G>, staleness::asynchronous, local_steps::every_step>;

/// SwarmSGD (Nadiradze et al., NeurIPS 2021, arXiv 1910.12308): H local steps, then non-blocking pairwise
/// averaging with a random neighbour in the r-regular graph G, models optionally quantized with
/// C = compress::lattice<B> (decoded against the receiver's own model). For a geometric number of local
/// steps with mean H, as the analysis assumes, use local_steps::geometric<H> in the optimizer directly.
template <int H = 2, class C = compress::identity, class G = topology::complete>
using swarm_sgd = optimizer<C, topology::random_pairwise<G>, staleness::asynchronous, local_steps::fixed<H>>;

}  // namespace distopt::algorithms
