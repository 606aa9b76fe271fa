"""Random-features score model at one diffusion time: training dynamics and the memorization timescale.

Reference: Bonnaire, Urfin, Biroli, Mezard, "Why Diffusion Models Don't Memorize: The Role of Implicit
Dynamical Regularization in Training", arXiv 2505.17638 (2025), Sect. 3.  This module uses the paper's
own (Ornstein-Uhlenbeck) convention, not diffmem's VE one: x_t = e^{-t} x + sqrt(Delta_t) xi,
Delta_t = 1 - e^{-2t} (equivalently sigma = sqrt(e^{2t} - 1) after dividing x_t by e^{-t}).

- Score model, Eq. (7): s_A(x) = A tanh(W x / sqrt(d)) / sqrt(p), W [p, d] i.i.d. N(0, 1) frozen,
  A [d, p] trained from A = 0.  Data N(0, I_d), which the forward process leaves invariant, so the exact
  score at every t is s(x) = -x.
- Loss, Eq. (4) rescaled by 1/d as in Sect. 3: L(A) = (1/(n d)) sum_nu E_xi ||sqrt(Delta_t) s_A(x_t^nu) + xi||^2;
  test loss and score error as in Eq. (8).
- Gradient descent, Eq. (9), with time tau = k eta / d^2; its eta -> 0 limit is the linear gradient flow
  Eq. (10): dA/dtau = -2 Delta_t (d/p) A U - 2 d sqrt(Delta_t)/sqrt(p) V^T with U, V of Eq. (11).  Solved
  exactly: with U = Q diag(lam) Q^T and c = 2 Delta_t / psi_p,
      A(tau) = -(2 d sqrt(Delta_t) / sqrt(p)) V^T Q diag((1 - exp(-c lam tau)) / (c lam)) Q^T,
  so the mode with eigenvalue lam relaxes on the timescale psi_p / (2 Delta_t lam).  The paper quotes
  psi_p / (Delta_t lam) (Sect. 3, "tau^{-1} = psi_p / Delta_t lam_min" — the inverse eigenvalues of
  Delta_t U / psi_p, dropping the factor 2); ``theory_tau_mem`` follows the paper's convention.
- The expectation over xi in Eqs. (4), (11) is estimated with `num_noise` draws per training point,
  either redrawn at every step (``resample_noise=True``, as in the authors' training script, where one
  fresh xi per point per step makes gradient descent an unbiased estimate of the E_xi dynamics) or
  drawn once (``resample_noise=False``: a fixed quadratic problem, the one ``rf_gradient_flow`` solves with
  num_noise = m > 0).  ``rf_gradient_flow`` with num_noise = 0 (default) uses the exact E_xi average of U
  and V (``noise_averaged_moments``): the flow that gradient descent with resampled noise follows as
  lr -> 0.  ``half_gap_time`` reads the split time without a threshold on the gap's size.
- Ridge (the authors' first training script, git 419195e of github.com/tbonnair/Why-Diffusion-Models-Don-t-Memorize,
  ``Theory/src/Training_random_features``): their model is s_B(x) = B tanh(W x / sqrt(d)) without 1/sqrt(p),
  i.e. B = A / sqrt(p), and their loss adds Delta_t lam ||B||_F^2 / d = Delta_t lam ||A||_F^2 / (p d).  Its
  gradient in A is 2 Delta_t lam A / (p d), so Eq. (10) becomes dA/dtau = -2 Delta_t (d/p) A (U + lam I) - ...:
  the ridge shifts every eigenvalue of U by exactly their lam (``ridge`` below, default 0), the flow's limit
  is A_inf = -sqrt(p / Delta_t) V^T (U + lam I)^{-1} (``rf_ridge_solution``), and the mode lam_k relaxes on
  psi_p / (2 Delta_t (lam_k + lam)).  Their plain SGD on B with rate eta_B is gradient descent on A with
  lr = p eta_B (grad_B = sqrt(p) grad_A), so their step advances tau = k lr / d^2 by psi_p eta_B / d, and
  their "training time" T = k eta_B is tau d / psi_p.  Their eta_B = 1e-4 d / Delta_t gives d tau = 1e-4
  psi_p / Delta_t per step (0.035 at psi_p = 64, t = 0.1), whatever d.
- Modes of U (issue 22): with ``bulk_size = k`` both solvers also record the losses at A restricted to the
  span of U's top-k eigenvectors (k = n: the theory's memorization bulk) and at the rest, A = A_bulk +
  A_outside (``split_by_modes``).  Every loss here is quadratic in A, so for any evaluation set
      L(A) = L(A_bulk) + L(A_outside) - L(0) + (2 Delta_t / d) mean_rows <s_bulk, s_outside>,
  s_part the score of A_part at the rows; under the flow each part evolves alone (U is diagonal in its
  eigenvectors), so A_bulk(tau) is the flow of the bulk modes by themselves.  The cross term vanishes in
  the noise-averaged training loss itself (U commutes with the projection), not in the test loss.
- Theory, Eqs. (12)-(14) and Theorem 3.2: the memorization bulk rho_1 of U has left edge
  lam_min = s_t^2 + v_t^2 (1 - sqrt(psi_p/psi_n))^2; tau_mem = psi_p / (Delta_t lam_min), which for
  psi_p >> psi_n >> 1 is ~ psi_n / (Delta_t v_t^2), i.e. linear in n.  The coefficients are computed by
  Gauss-Hermite quadrature.  (We read Eq. (14)'s sigma(Gamma_t u) as sigma(sqrt(Gamma_t) u): Gamma_t is the
  pre-activation variance e^{-2t} sigma_x^2 + Delta_t; the two agree for sigma_x = 1.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "RandomFeatureScore",
    "delta",
    "exact_score",
    "noised",
    "rf_coefficients",
    "rf_features",
    "rf_gradient_flow",
    "rf_loss",
    "rf_loss_grad",
    "rf_ridge_solution",
    "rf_score",
    "sigma_of_t",
    "split_by_modes",
    "split_time",
    "t_of_sigma",
    "theory_bulk_edges",
    "theory_spectrum_cdf",
    "theory_tau_mem",
    "top_modes",
    "train_random_features",
    "half_gap_time",
    "gap_level_time",
    "noise_averaged_moments",
    "MODE_PARTS",
]

# the two parts of A recorded with ``bulk_size``: "train_loss_<part>", "test_loss_<part>"
MODE_PARTS = ("bulk", "outside")


def delta(t: float) -> float:
    """Delta_t = 1 - e^{-2t}."""
    return -math.expm1(-2.0 * t)


def sigma_of_t(t: float) -> float:
    """diffmem's VE noise level for OU time t: x_t / e^{-t} = x + sqrt(e^{2t} - 1) xi."""
    return math.sqrt(math.expm1(2.0 * t))


def t_of_sigma(sigma: float) -> float:
    """Inverse of ``sigma_of_t``: t = log(1 + sigma^2) / 2."""
    return 0.5 * math.log1p(sigma * sigma)


def noised(x: Tensor, xi: Tensor, t: float) -> Tensor:
    """x_t = e^{-t} x + sqrt(Delta_t) xi, [B, d]."""
    return math.exp(-t) * x + math.sqrt(delta(t)) * xi


def rf_features(w: Tensor, x: Tensor) -> Tensor:
    """tanh(W x / sqrt(d)) for each row of x: x [B, d], W [p, d] -> [B, p]."""
    return torch.tanh(x @ w.T / math.sqrt(w.shape[1]))


def rf_score(a: Tensor, w: Tensor, x: Tensor) -> Tensor:
    """s_A(x) = A tanh(W x / sqrt(d)) / sqrt(p), Eq. (7): A [d, p], W [p, d], x [B, d] -> [B, d]."""
    return rf_features(w, x) @ a.T / math.sqrt(w.shape[0])


def exact_score(x: Tensor) -> Tensor:
    """Score of N(0, I_d) (the noised law at every t for N(0, I_d) data): -x."""
    return -x


def top_modes(q: Tensor, k: int) -> Tensor:
    """The eigenvectors of the k largest eigenvalues, [p, min(k, p)], from q [p, p] of an ascending
    eigendecomposition (``torch.linalg.eigh``): the theory's memorization bulk of U when k = n."""
    p = q.shape[1]
    return q[:, p - min(max(int(k), 0), p):]


def split_by_modes(a: Tensor, q_bulk: Tensor) -> tuple[Tensor, Tensor]:
    """A [d, p] restricted to the span of the orthonormal columns of q_bulk [p, k] and to its orthogonal
    complement: A_bulk = A Q Q^T, A_outside = A - A_bulk (so A = A_bulk + A_outside, A_bulk A_outside^T = 0)."""
    a_bulk = (a @ q_bulk) @ q_bulk.T  # [d, p]
    return a_bulk, a - a_bulk


def rf_loss(a: Tensor, w: Tensor, x_noisy: Tensor, xi: Tensor, delta_t: float) -> Tensor:
    """Per-sample loss (1/d) ||sqrt(Delta_t) s_A(x_t) + xi||^2, [B] (Eq. (4) / (8) summand)."""
    r = math.sqrt(delta_t) * rf_score(a, w, x_noisy) + xi  # [B, d]
    return r.pow(2).sum(1) / w.shape[1]


def rf_loss_grad(a: Tensor, w: Tensor, x_noisy: Tensor, xi: Tensor, delta_t: float) -> Tensor:
    """Gradient w.r.t. A [d, p] of the batch mean of ``rf_loss``: (2 sqrt(Delta_t) / (B d sqrt(p))) r^T phi."""
    phi = rf_features(w, x_noisy)  # [B, p]
    p = w.shape[0]
    r = math.sqrt(delta_t) * phi @ a.T / math.sqrt(p) + xi  # [B, d]
    return (2.0 * math.sqrt(delta_t) / (x_noisy.shape[0] * w.shape[1] * math.sqrt(p))) * (r.T @ phi)


class RandomFeatureScore(nn.Module):
    """s_A(x) = A tanh(W x / sqrt(d)) / sqrt(p) with W [p, d] ~ N(0, 1) frozen (buffer) and A [d, p] = 0."""

    def __init__(self, d: int, p: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(p, d, generator=generator, dtype=dtype))
        self.a = nn.Parameter(torch.zeros(d, p, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:  # [B, d] -> [B, d]
        return rf_score(self.a, self.w, x)


def _default_record_steps(num_steps: int, count: int = 60) -> np.ndarray:
    steps = np.unique(np.round(np.geomspace(1, max(num_steps, 1), count)).astype(np.int64))
    return np.unique(np.concatenate([[0], steps[steps <= num_steps]]))


class _Evaluator:
    """Train/test losses and score error with evaluation noise drawn once (common random numbers).

    The features of the evaluation points depend on W only, so they are computed once (on the first call)
    and each evaluation costs one [rows, p] x [p, d] product per set."""

    def __init__(self, train_x: Tensor, test_x: Tensor, *, t: float, num_eval_noise: int, generator: torch.Generator):
        self.dt = delta(t)
        tr = train_x.repeat(num_eval_noise, 1)  # [n m, d]
        te = test_x.repeat(num_eval_noise, 1)  # [n_test m, d]
        self.xi_tr = torch.randn(tr.shape, generator=generator, dtype=tr.dtype)
        self.xi_te = torch.randn(te.shape, generator=generator, dtype=te.dtype)
        self.x_tr = noised(tr, self.xi_tr, t)
        self.x_te = noised(te, self.xi_te, t)
        self._w: Tensor | None = None

    def _features(self, w: Tensor) -> None:
        if self._w is not w:
            self._w = w
            self.phi_tr, self.phi_te = rf_features(w, self.x_tr), rf_features(w, self.x_te)  # [R, p]

    def __call__(self, a: Tensor, w: Tensor) -> tuple[float, float, float]:
        self._features(w)
        scale = 1.0 / math.sqrt(w.shape[0])
        s_tr = self.phi_tr @ a.T * scale  # s_A at the training evaluation points, [R, d]
        s_te = self.phi_te @ a.T * scale
        d = w.shape[1]
        train = (math.sqrt(self.dt) * s_tr + self.xi_tr).pow(2).sum(1).mean() / d  # Eq. (8), as rf_loss
        test = (math.sqrt(self.dt) * s_te + self.xi_te).pow(2).sum(1).mean() / d
        err = (s_te - exact_score(self.x_te)).pow(2).sum(1).mean() / d
        return float(train), float(test), float(err)


def _record_losses(out: dict[str, list[float]], evaluate: _Evaluator, a: Tensor, w: Tensor,
                   q_bulk: Tensor | None) -> tuple[float, float, float]:
    """Evaluate A and append its losses to `out`; with q_bulk, also those of A's parts (MODE_PARTS)."""
    tr, te, err = evaluate(a, w)
    out["train_loss"].append(tr)
    out["test_loss"].append(te)
    out["score_error"].append(err)
    if q_bulk is not None:
        for part, a_part in zip(MODE_PARTS, split_by_modes(a, q_bulk)):
            part_tr, part_te, _ = evaluate(a_part, w)
            out[f"train_loss_{part}"].append(part_tr)
            out[f"test_loss_{part}"].append(part_te)
    return tr, te, err


def _loss_record(time_key: str, q_bulk: Tensor | None) -> dict[str, list[float]]:
    keys = [time_key, "train_loss", "test_loss", "score_error"]
    if q_bulk is not None:
        keys += [f"{kind}_loss_{part}" for part in MODE_PARTS for kind in ("train", "test")]
    return {key: [] for key in keys}


def _tanh_derivatives(th: Tensor, order: int) -> list[Tensor]:
    """tanh^(k)(x) for k = 0..order (order <= 4) as polynomials in th = tanh(x)."""
    t2 = th * th
    out = [th, 1 - t2, -2 * th * (1 - t2), -2 + 8 * t2 - 6 * t2 * t2, th * (16 - 40 * t2 + 24 * t2 * t2)]
    return out[: order + 1]


def noise_averaged_moments(train_x: Tensor, w: Tensor, *, t: float, order: int = 4, num_nodes: int = 32,
                           chunk_rows: int = 512) -> tuple[Tensor, Tensor]:
    """U [p, p] and V [p, d] of Eq. (11) with the expectation over the noise xi taken analytically.

    U = (1/n) sum_nu E_xi[phi(x_t^nu) phi(x_t^nu)^T], V = (1/n) sum_nu E_xi[phi(x_t^nu) xi^T] is what gradient
    descent with the noise redrawn every step follows on average (its eta -> 0 limit); it holds the s_t^2
    term of U that a single frozen draw lacks.  Given x, the pre-activations u_i = w_i.x_t / sqrt(d) are
    jointly Gaussian with means e^{-t} w_i.x / sqrt(d), variances Delta_t |w_i|^2 / d and covariances
    Delta_t R_ij, R = W W^T / d.  Mehler's expansion E[f(u_i) f(u_j)] = sum_k (Delta_t R_ij)^k / k!
    E[f^(k)(u_i)] E[f^(k)(u_j)] gives, with a_k^nu[i] = E[tanh^(k)(u_i)] (Gauss-Hermite, `num_nodes`),
        U = (1/n) sum_k Delta_t^k / k! (sum_nu a_k^nu a_k^nu^T) o R^{o k}   (o: elementwise),
    truncated after k = `order` (the next term is ~ (Delta_t R_ij)^(order+1) / (order+1)!, R_ij ~ d^(-1/2)),
    and the diagonal exactly, U_ii = (1/n) sum_nu E[tanh(u_i)^2].  Stein's lemma gives V exactly:
    V_ij = sqrt(Delta_t / d) W_ij (1/n) sum_nu a_1^nu[i].  Cost: (order + 1) products [p, n] x [n, p]."""
    if not 0 <= order <= 4:
        raise ValueError(f"order must be in 0..4; got {order}")
    n, d = train_x.shape
    p = w.shape[0]
    dt = delta(t)
    dtype = train_x.dtype
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    weights = torch.as_tensor(weights / weights.sum(), dtype=dtype)
    nodes = torch.as_tensor(nodes, dtype=dtype)
    r_mat = w @ w.T / d  # [p, p]
    std = torch.sqrt(dt * torch.diagonal(r_mat))  # [p], noise std of each pre-activation
    u = torch.zeros(p, p, dtype=dtype)
    diag = torch.zeros(p, dtype=dtype)
    a1_sum = torch.zeros(p, dtype=dtype)
    for c0 in range(0, n, chunk_rows):
        mean = math.exp(-t) * train_x[c0 : c0 + chunk_rows] @ w.T / math.sqrt(d)  # [c, p]
        acc = [torch.zeros_like(mean) for _ in range(max(order, 1) + 1)]  # a_1 is needed for V
        sq = torch.zeros_like(mean)
        for g, wt in zip(nodes, weights):
            th = torch.tanh(mean + g * std)
            for k, val in enumerate(_tanh_derivatives(th, max(order, 1))):
                acc[k].add_(val, alpha=float(wt))
            sq.add_(th * th, alpha=float(wt))
        for k in range(order + 1):
            gram = acc[k].T @ acc[k]  # [p, p]
            if k:
                gram.mul_(r_mat.pow(k)).mul_(dt**k / math.factorial(k))
            u.add_(gram)
        diag += sq.sum(0)
        a1_sum += acc[1].sum(0)
    u /= n
    u.diagonal().copy_(diag / n)
    v = math.sqrt(dt / d) * w * (a1_sum / n)[:, None]  # [p, d]
    return u, v


def train_random_features(
    train_x: Tensor,
    test_x: Tensor,
    *,
    p: int,
    t: float,
    lr: float,
    num_steps: int,
    generator: torch.Generator,
    num_noise: int = 1,
    resample_noise: bool = True,
    record_steps: Sequence[int] | None = None,
    num_eval_noise: int = 16,
    ridge: float = 0.0,
    bulk_size: int | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Full-batch gradient descent (Eq. (9)) on the RF score loss at diffusion time t, from A = 0.

    `ridge` adds the authors' penalty Delta_t ridge ||A||_F^2 / (p d) to the training loss (module
    docstring: it shifts U by ridge I); the recorded losses are the unpenalized Eq. (8).

    train_x [n, d], test_x [n_test, d] (N(0, I_d) for the score error to be meaningful).  W is drawn from
    `generator`, then the noise.  Returns numpy arrays "step", "tau" (= step lr / d^2), "train_loss",
    "test_loss", "score_error" (Eq. (8), evaluated with `num_eval_noise` fixed draws per point), and the
    final "A" [d, p] and "W" [p, d].  With `bulk_size` = k also "train_loss_bulk", "test_loss_bulk",
    "train_loss_outside", "test_loss_outside": the losses of A restricted to U's top-k eigenvectors and to
    the rest (module docstring), U the matrix whose flow gradient descent follows on average: the
    noise-averaged one (``noise_averaged_moments``) when the noise is redrawn, the frozen draws' otherwise.
    That costs one U and one eigendecomposition, and draws nothing from `generator`.

    `progress(step, {"train_loss": ..., "test_loss": ..., "score_error": ...})`, if given, is called after
    each recorded evaluation; an exception it raises stops training (e.g. on a non-finite loss).
    """
    dtype = train_x.dtype
    n, d = train_x.shape
    dt = delta(t)
    w = torch.randn(p, d, generator=generator, dtype=dtype)
    a = torch.zeros(d, p, dtype=dtype)
    evaluate = _Evaluator(train_x, test_x, t=t, num_eval_noise=num_eval_noise, generator=generator)
    rec = _default_record_steps(num_steps) if record_steps is None else np.unique(np.asarray(record_steps))
    rec_set = {int(k) for k in rec}
    xs = train_x.repeat(num_noise, 1)  # [n m, d]
    u_mat = v_mat = None
    if not resample_noise:
        xi = torch.randn(xs.shape, generator=generator, dtype=dtype)
        phi = rf_features(w, noised(xs, xi, t))  # [n m, p]
        u_mat = phi.T @ phi / phi.shape[0]  # [p, p], Eq. (11)
        v_mat = phi.T @ xi / phi.shape[0]  # [p, d], Eq. (11)
    q_bulk = None
    if bulk_size is not None:
        u_mean = u_mat if u_mat is not None else noise_averaged_moments(train_x, w, t=t)[0]
        q_bulk = top_modes(torch.linalg.eigh(u_mean)[1], bulk_size)
    out = _loss_record("step", q_bulk)
    for k in range(num_steps + 1):
        if k in rec_set:
            out["step"].append(k)
            tr, te, err = _record_losses(out, evaluate, a, w, q_bulk)
            if progress is not None:
                progress(k, {"train_loss": tr, "test_loss": te, "score_error": err})
        if k == num_steps:
            break
        if resample_noise:
            xi = torch.randn(xs.shape, generator=generator, dtype=dtype)
            grad = rf_loss_grad(a, w, noised(xs, xi, t), xi, dt)
        else:
            grad = (2.0 * dt / p * (a @ u_mat) + 2.0 * math.sqrt(dt / p) * v_mat.T) / d
        if ridge:
            grad = grad + (2.0 * dt * ridge / (p * d)) * a
        a = a - lr * grad
    res = {key: np.asarray(val) for key, val in out.items()}
    res["tau"] = res["step"] * lr / d**2
    res["A"] = a.numpy()
    res["W"] = w.numpy()
    return res


def rf_gradient_flow(
    train_x: Tensor,
    test_x: Tensor,
    *,
    p: int,
    t: float,
    taus: Sequence[float],
    generator: torch.Generator,
    num_noise: int = 0,
    num_eval_noise: int = 16,
    ridge: float = 0.0,
    bulk_size: int | None = None,
    eigh_float32_above: int = 2048,
    log: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Exact solution of the gradient flow Eq. (10).  With num_noise = 0 (default) U, V (Eq. (11)) are the
    noise-averaged moments (``noise_averaged_moments``, analytic), the small-lr limit of gradient descent
    with the noise redrawn every step; num_noise = m > 0 freezes m draws per point instead (a different,
    fixed quadratic problem: for m = 1, U has rank <= n and lacks the s_t^2 term).  One eigendecomposition
    of U [p, p], then every tau is closed form.  `ridge` (the authors' lam, module docstring) shifts every
    eigenvalue of U by ridge; at tau -> inf A tends to ``rf_ridge_solution``.

    Draws W, the evaluation noise, then (num_noise > 0) the training noise from `generator`.  Returns "tau",
    "train_loss", "test_loss", "score_error", "eigvals" (of U, ascending, without the ridge) and "A" [d, p]
    at the last tau; with `bulk_size` = k also the losses of A restricted to U's top-k eigenvectors and to the
    rest ("train_loss_bulk", "test_loss_bulk", "train_loss_outside", "test_loss_outside", module docstring).
    """
    dtype = train_x.dtype
    n, d = train_x.shape
    dt = delta(t)
    w = torch.randn(p, d, generator=generator, dtype=dtype)
    evaluate = _Evaluator(train_x, test_x, t=t, num_eval_noise=num_eval_noise, generator=generator)
    if num_noise > 0:  # Monte Carlo: fixed draws (the pre-existing frozen-noise problem when num_noise = 1)
        xs = train_x.repeat(num_noise, 1)  # [n m, d]
        xi = torch.randn(xs.shape, generator=generator, dtype=dtype)
        phi = rf_features(w, noised(xs, xi, t))  # [n m, p]
        u_mat, v_mat = phi.T @ phi / phi.shape[0], phi.T @ xi / phi.shape[0]
        del phi
    else:
        u_mat, v_mat = noise_averaged_moments(train_x, w, t=t)
    say = log or (lambda _: None)
    t0 = time.monotonic()
    say(f"U, V ready; eigendecomposition of U [{p}, {p}]")
    # float32 above p = eigh_float32_above: the eigendecomposition dominates the cost (p^3) and its absolute
    # eigenvalue error, ~1e-7 lambda_max, stays far below the memorization edge lambda_min
    if p > eigh_float32_above:
        lam, q = torch.linalg.eigh(u_mat.float())
        lam, q = lam.to(dtype), q.to(dtype)
    else:
        lam, q = torch.linalg.eigh(u_mat)
    del u_mat
    say(f"eigendecomposition done ({time.monotonic() - t0:.0f} s); {len(taus)} times")
    lam = lam.clamp_min(0)
    lam_eff = lam + ridge  # the ridge shifts U by ridge I (module docstring)
    c = 2.0 * dt * d / p
    vq = v_mat.T @ q  # [d, p]
    q_bulk = None if bulk_size is None else top_modes(q, bulk_size)
    out = _loss_record("tau", q_bulk)
    for tau in taus:
        x = c * lam_eff * tau
        h = torch.where(x > 1e-12, -torch.expm1(-x) / (c * lam_eff).clamp_min(1e-300), torch.full_like(lam, tau))
        a = -(2.0 * d * math.sqrt(dt / p)) * (vq * h) @ q.T  # [d, p]
        out["tau"].append(float(tau))
        _record_losses(out, evaluate, a, w, q_bulk)
    res = {key: np.asarray(val) for key, val in out.items()}
    res["eigvals"] = lam.numpy()
    res["A"] = a.numpy() if len(taus) else np.zeros((d, p))
    return res


def rf_ridge_solution(u: Tensor, v: Tensor, *, t: float, ridge: float) -> Tensor:
    """The minimizer of the ridge-penalized loss, A = -sqrt(p / Delta_t) V^T (U + ridge I)^{-1}, [d, p].

    U [p, p], V [p, d] of Eq. (11); the loss is (Delta_t / (p d)) tr(A U A^T) + (2 sqrt(Delta_t) / (d sqrt(p)))
    tr(A V) + Delta_t ridge ||A||_F^2 / (p d) + const (module docstring).  The long-time limit of
    ``rf_gradient_flow`` and of small-lr ``train_random_features`` with the same ridge."""
    p = u.shape[0]
    shifted = u + ridge * torch.eye(p, dtype=u.dtype)
    return -math.sqrt(p / delta(t)) * torch.linalg.solve(shifted, v).T  # U + ridge I is symmetric


def split_time(
    train_loss: Sequence[float], test_loss: Sequence[float], steps: Sequence[float], *, rel_gap: float
) -> float | None:
    """First entry of `steps` where (test - train) / test > rel_gap; None if the gap never opens."""
    tr, te, st = np.asarray(train_loss, float), np.asarray(test_loss, float), np.asarray(steps)
    gap = (te - tr) / te
    hits = np.nonzero(gap > rel_gap)[0]
    return None if hits.size == 0 else st[hits[0]].item()


def half_gap_time(train_loss: Sequence[float], test_loss: Sequence[float], taus: Sequence[float]) -> float | None:
    """The time at which the train-test gap G = test - train first reaches half its long-time value:
    ``gap_level_time`` at level 0.5 (see there)."""
    return gap_level_time(train_loss, test_loss, taus, level=0.5)


def gap_level_time(train_loss: Sequence[float], test_loss: Sequence[float], taus: Sequence[float], *,
                   level: float) -> float | None:
    """The time at which the train-test gap G = test - train first reaches `level` (0 < level < 1) of its
    long-time value.

    The long-time value is the gap at the last recorded tau (the caller makes the run long enough for the
    gap to settle).  The crossing is interpolated linearly in log tau between the bracketing points; taus
    <= 0 are ignored.  None when the final gap is not positive (no split).  For G(tau) = G_inf (1 -
    e^{-tau / tau_0}) it returns -tau_0 ln(1 - level) (tau_0 ln 2 at level 0.5); no threshold on the size of
    the gap is involved, so a gap that shrinks with n (as it does, ~ 1/psi_n) does not bias the time.  Low
    levels read the fast part of the gap's rise, high levels its slowest modes."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    tr, te, ta = np.asarray(train_loss, float), np.asarray(test_loss, float), np.asarray(taus, float)
    ok = np.isfinite(tr) & np.isfinite(te) & (ta > 0)
    gap, ta = (te - tr)[ok], ta[ok]
    if gap.size == 0 or not gap[-1] > 0:
        return None
    half = level * gap[-1]
    hits = np.nonzero(gap >= half)[0]
    i = int(hits[0])
    if i == 0:
        return float(ta[0])
    frac = (half - gap[i - 1]) / (gap[i] - gap[i - 1])
    return float(np.exp(np.log(ta[i - 1]) + frac * (np.log(ta[i]) - np.log(ta[i - 1]))))


def rf_coefficients(t: float, *, sigma_x: float = 1.0, num_nodes: int = 96) -> dict[str, float]:
    """a_t, b_t, v_t^2, s_t^2 of Eqs. (12)-(14) for sigma = tanh, by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    weights = weights / weights.sum()  # E over N(0, 1)
    alpha, beta = math.exp(-t) * sigma_x, math.sqrt(delta(t))
    act = np.tanh(alpha * nodes[:, None] + beta * nodes[None, :])  # [u, v]
    wuv = weights[:, None] * weights[None, :]
    b_t = float(np.sum(wuv * act * nodes[None, :]))
    a_t = float(np.sum(wuv * act * nodes[:, None]) / alpha)
    inner = act @ weights  # E_v sigma(alpha u + beta v), [u]
    v2 = float(np.sum(weights * inner**2) - a_t**2 * alpha**2)
    gamma = alpha**2 + beta**2
    s2 = float(np.sum(weights * np.tanh(math.sqrt(gamma) * nodes) ** 2) - a_t**2 * alpha**2 - v2 - b_t**2)
    return {"a_t": a_t, "b_t": b_t, "v_t2": v2, "s_t2": s2, "delta_t": delta(t)}


def theory_bulk_edges(psi_n: float, psi_p: float, t: float, *, sigma_x: float = 1.0) -> tuple[float, float]:
    """Support of the memorization bulk rho_1 of U (Theorem 3.2): s_t^2 + v_t^2 (1 -/+ sqrt(psi_p/psi_n))^2."""
    co = rf_coefficients(t, sigma_x=sigma_x)
    r = math.sqrt(psi_p / psi_n)
    return co["s_t2"] + co["v_t2"] * (1 - r) ** 2, co["s_t2"] + co["v_t2"] * (1 + r) ** 2


def theory_spectrum_cdf(x: Sequence[float] | np.ndarray, psi_n: float, psi_p: float, t: float, *,
                        sigma_x: float = 1.0, num_grid: int = 4000) -> np.ndarray:
    """The theory's fraction of U's eigenvalues <= x, for psi_n < psi_p (Theorem 3.2, its rho_2 of d modes
    dropped): a mass 1 - psi_n / psi_p at s_t^2 and psi_n / psi_p spread as s_t^2 + v_t^2 mu, mu
    Marchenko-Pastur with edges (1 -/+ sqrt(psi_p / psi_n))^2 (density prop. to sqrt((b - mu)(mu - a)) / mu,
    normalized numerically on `num_grid` points)."""
    if not psi_n < psi_p:
        raise ValueError(f"theory_spectrum_cdf needs psi_n < psi_p; got {psi_n}, {psi_p}")
    co = rf_coefficients(t, sigma_x=sigma_x)
    r = math.sqrt(psi_p / psi_n)
    a, b = (1 - r) ** 2, (1 + r) ** 2
    grid = np.linspace(a, b, num_grid)
    dens = np.sqrt(np.clip((b - grid) * (grid - a), 0.0, None)) / grid
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    mu = (np.asarray(x, float) - co["s_t2"]) / co["v_t2"]
    frac = psi_n / psi_p
    return np.where(mu < 0, 0.0, (1 - frac) + frac * np.interp(mu, grid, cdf, left=0.0, right=1.0))


def theory_tau_mem(psi_n: float, psi_p: float, t: float, *, sigma_x: float = 1.0) -> float:
    """Predicted memorization time tau_mem = psi_p / (Delta_t lam_min), lam_min the left edge of rho_1.

    For psi_p >> psi_n >> 1 this tends to psi_n / (Delta_t v_t^2) (Sect. 3, "Memorization"); in units of
    tau = k eta / d^2.  Paper convention (see module docstring): the e-folding time of the slowest
    memorizing mode of A under Eq. (10) is half of this.
    """
    lam_min, _ = theory_bulk_edges(psi_n, psi_p, t, sigma_x=sigma_x)
    return psi_p / (delta(t) * lam_min)
