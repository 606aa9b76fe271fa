"""Random-features score model (arXiv 2505.17638, Sect. 3): gradients, training, split time, theory."""

import math

import numpy as np
import torch

from diffmem.families import random_features as rf


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_module_matches_functional_score_and_exact_score_is_minus_x():
    model = rf.RandomFeatureScore(6, 24, generator=_gen(0))
    assert torch.count_nonzero(model.a) == 0 and model.w.shape == (24, 6)
    with torch.no_grad():
        model.a.copy_(torch.randn(6, 24, generator=_gen(1), dtype=torch.float64))
    x = torch.randn(5, 6, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(model(x), rf.rf_score(model.a, model.w, x))
    expect = (torch.tanh(x @ model.w.T / math.sqrt(6)) @ model.a.T) / math.sqrt(24)
    torch.testing.assert_close(model(x), expect)
    torch.testing.assert_close(rf.exact_score(x), -x)


def test_analytic_gradient_matches_central_differences_and_autograd():
    d, p, b, t = 4, 10, 7, 0.3
    g = _gen(3)
    w = torch.randn(p, d, generator=g, dtype=torch.float64)
    a = 0.5 * torch.randn(d, p, generator=g, dtype=torch.float64)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    xi = torch.randn(b, d, generator=g, dtype=torch.float64)
    dt = rf.delta(t)
    xt = rf.noised(x, xi, t)
    grad = rf.rf_loss_grad(a, w, xt, xi, dt)
    eps = 1e-6
    fd = torch.zeros_like(a)
    for i in range(d):
        for j in range(p):
            e = torch.zeros_like(a)
            e[i, j] = eps
            fd[i, j] = (rf.rf_loss(a + e, w, xt, xi, dt).mean() - rf.rf_loss(a - e, w, xt, xi, dt).mean()) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-7, atol=1e-9)
    a_req = a.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(rf.rf_loss(a_req, w, xt, xi, dt).mean(), a_req)
    torch.testing.assert_close(grad, auto)


def test_loss_decreases_over_training():
    d, t = 20, 0.1
    g = _gen(4)
    train = torch.randn(40, d, generator=g, dtype=torch.float64)
    test = torch.randn(200, d, generator=g, dtype=torch.float64)
    for resample in (True, False):
        res = rf.train_random_features(
            train, test, p=16 * d, t=t, lr=2.0 * d**2, num_steps=300, generator=_gen(5),
            num_noise=1 if resample else 8, resample_noise=resample,
        )
        tr = res["train_loss"]
        assert res["step"][0] == 0 and res["step"][-1] == 300
        np.testing.assert_allclose(res["tau"], res["step"] * 2.0)  # tau = k lr / d^2
        assert abs(tr[0] - 1.0) < 0.05  # A = 0: L = E||xi||^2 / d = 1
        assert tr[-1] < 0.7 * tr[0]
        coarse = tr[:: max(1, len(tr) // 8)]
        assert np.all(np.diff(coarse) < 0.01)  # decreasing up to evaluation / SGD noise


def test_gradient_descent_with_fixed_noise_follows_the_exact_gradient_flow():
    d, p, n, t = 8, 48, 16, 0.2
    g = _gen(6)
    train = torch.randn(n, d, generator=g, dtype=torch.float64)
    test = torch.randn(64, d, generator=g, dtype=torch.float64)
    lr = 0.02 * d**2  # d tau = 0.02
    gd = rf.train_random_features(
        train, test, p=p, t=t, lr=lr, num_steps=1000, generator=_gen(7), num_noise=4,
        resample_noise=False, record_steps=[0, 50, 250, 1000], num_eval_noise=4,
    )
    flow = rf.rf_gradient_flow(
        train, test, p=p, t=t, taus=list(gd["tau"]), generator=_gen(7), num_noise=4, num_eval_noise=4
    )
    for key in ("train_loss", "test_loss", "score_error"):
        np.testing.assert_allclose(gd[key], flow[key], rtol=0.02)


def test_time_to_sigma_conversion():
    t = 0.37
    xi = torch.randn(3, 4, generator=_gen(9), dtype=torch.float64)
    x = torch.randn(3, 4, generator=_gen(10), dtype=torch.float64)
    torch.testing.assert_close(rf.noised(x, xi, t) / math.exp(-t), x + rf.sigma_of_t(t) * xi)
    assert math.isclose(rf.t_of_sigma(rf.sigma_of_t(t)), t)


def test_split_time_helper():
    steps = [0, 10, 20, 30]
    assert rf.split_time([1.0, 0.9, 0.5, 0.3], [1.0, 0.92, 0.7, 0.9], steps, rel_gap=0.2) == 20
    assert rf.split_time([1.0, 0.9], [1.0, 0.9], steps[:2], rel_gap=0.01) is None


def test_split_time_grows_with_psi_n():
    d, psi_p, t = 20, 16, 0.1
    splits = []
    for psi_n in (1, 2, 4):
        g = _gen(100 + psi_n)
        train = torch.randn(psi_n * d, d, generator=g, dtype=torch.float64)
        test = torch.randn(256, d, generator=g, dtype=torch.float64)
        res = rf.train_random_features(
            train, test, p=psi_p * d, t=t, lr=2.0 * d**2, num_steps=500, generator=g, num_eval_noise=8
        )
        splits.append(rf.split_time(res["train_loss"], res["test_loss"], res["tau"], rel_gap=0.2))
    assert all(s is not None for s in splits)
    assert splits[0] < splits[1] < splits[2]
    assert splits[2] > 4 * splits[0]


def test_theory_coefficients_and_tau_mem():
    t = 0.1
    co = rf.rf_coefficients(t)
    # Monte Carlo check of Eqs. (12)-(14) for tanh and sigma_x = 1
    g = _gen(8)
    u, v, w = (torch.randn(400_000, generator=g, dtype=torch.float64) for _ in range(3))
    al, be = math.exp(-t), math.sqrt(rf.delta(t))
    act = torch.tanh(al * u + be * v)
    assert abs(float((v * act).mean()) - co["b_t"]) < 5e-3
    assert abs(float((u * act).mean()) / al - co["a_t"]) < 5e-3
    v2 = float((act * torch.tanh(al * u + be * w)).mean()) - co["a_t"] ** 2 * al**2
    assert abs(v2 - co["v_t2"]) < 3e-3
    # Stein: E[sigma(alpha u + beta v) v] = beta E[sigma'] and a_t = E[sigma'], so b_t = sqrt(Delta_t) a_t
    assert math.isclose(co["b_t"], be * co["a_t"], rel_tol=1e-8)
    # tau_mem grows with psi_n and tends to psi_n / (Delta_t v_t^2) when psi_p >> psi_n
    taus = [rf.theory_tau_mem(pn, 64, t) for pn in (1, 2, 4, 8)]
    assert all(b > a for a, b in zip(taus, taus[1:]))
    for pn in (1, 4):
        asym = pn / (co["delta_t"] * co["v_t2"])
        assert math.isclose(rf.theory_tau_mem(pn, 1e7, t), asym, rel_tol=0.01)
    lo, hi = rf.theory_bulk_edges(2, 16, t)
    r = math.sqrt(8)
    assert math.isclose(lo, co["s_t2"] + co["v_t2"] * (1 - r) ** 2) and hi > lo


def test_noise_averaged_moments_match_monte_carlo_and_converge_in_order():
    from diffmem.families.random_features import noise_averaged_moments, noised, rf_features

    g = torch.Generator().manual_seed(0)
    n, d, p, t = 12, 16, 48, 0.1
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(p, d, generator=g, dtype=torch.float64)
    u, v = noise_averaged_moments(x, w, t=t, chunk_rows=5)  # several row chunks
    m = 20_000
    xs = x.repeat(m, 1)
    xi = torch.randn(xs.shape, generator=g, dtype=torch.float64)
    phi = rf_features(w, noised(xs, xi, t))
    u_mc, v_mc = phi.T @ phi / phi.shape[0], phi.T @ xi / phi.shape[0]
    # Monte Carlo error ~ 1 / sqrt(n m) ~ 2e-3
    assert float((u - u_mc).abs().max()) < 8e-3
    assert float((v - v_mc).abs().max()) < 8e-3
    # the frozen single draw is far off (it lacks the noise variance on the diagonal)
    one = rf_features(w, noised(x, xi[:n], t))
    assert float((one.T @ one / n - u).abs().max()) > 3e-2
    # the Mehler series converges: each order changes U less
    steps = [float((noise_averaged_moments(x, w, t=t, order=k)[0] - u).abs().max()) for k in range(4)]
    assert all(a > b for a, b in zip(steps, steps[1:])) and steps[-1] < 1e-4


def _ridge_problem(seed: int, *, d: int = 5, p: int = 40, n: int = 12, m: int = 3):
    g = _gen(seed)
    train = torch.randn(n, d, generator=g, dtype=torch.float64)
    test = torch.randn(32, d, generator=g, dtype=torch.float64)
    return train, test, d, p, m


def test_ridge_solution_is_the_direct_penalized_least_squares_solve():
    """rf_ridge_solution against numpy's lstsq on the explicit penalized regression: with m frozen draws per
    point the loss (1/(N d)) ||sqrt(Delta_t) Phi A^T / sqrt(p) + Xi||^2 + Delta_t lam ||A||^2 / (p d), N = n m,
    is ordinary least squares on the rows of Phi stacked over sqrt(N lam) I (the authors' ridge)."""
    train, _, d, p, m = _ridge_problem(21)
    t, lam = 0.1, 0.05
    dt = rf.delta(t)
    w = torch.randn(p, d, generator=_gen(22), dtype=torch.float64)
    xs = train.repeat(m, 1)
    xi = torch.randn(xs.shape, generator=_gen(23), dtype=torch.float64)
    phi = rf.rf_features(w, rf.noised(xs, xi, t))  # [N, p]
    n_rows = phi.shape[0]
    u, v = phi.T @ phi / n_rows, phi.T @ xi / n_rows
    got = rf.rf_ridge_solution(u, v, t=t, ridge=lam).numpy()
    # unknown B = A^T / sqrt(p) ... in A directly: rows sqrt(Delta_t / p) phi_i, targets -xi_i; penalty rows
    design = np.vstack([math.sqrt(dt / p) * phi.numpy(), math.sqrt(n_rows * dt * lam / p) * np.eye(p)])
    target = np.vstack([-xi.numpy(), np.zeros((p, d))])
    direct = np.linalg.lstsq(design, target, rcond=None)[0].T  # [d, p]
    np.testing.assert_allclose(got, direct, rtol=1e-8, atol=1e-10)
    # the ridge matters here (p > N: without it the problem has no unique minimizer)
    assert n_rows < p and np.linalg.norm(got) < 0.5 * np.linalg.norm(rf.rf_ridge_solution(u, v, t=t, ridge=1e-6))


def test_flow_with_ridge_tends_to_the_ridge_solution_and_zero_ridge_changes_nothing():
    train, test, d, p, m = _ridge_problem(31)
    t, lam = 0.1, 0.02
    taus = [1.0, 10.0, 1e3, 1e12]
    plain = rf.rf_gradient_flow(train, test, p=p, t=t, taus=taus, generator=_gen(4), num_noise=m, num_eval_noise=2)
    zero = rf.rf_gradient_flow(train, test, p=p, t=t, taus=taus, generator=_gen(4), num_noise=m, num_eval_noise=2,
                               ridge=0.0)
    for key in ("train_loss", "test_loss", "score_error", "eigvals", "A"):
        np.testing.assert_array_equal(plain[key], zero[key])
    ridged = rf.rf_gradient_flow(train, test, p=p, t=t, taus=taus, generator=_gen(4), num_noise=m, num_eval_noise=2,
                                 ridge=lam)
    # the same frozen draws, rebuilt: W first, then the evaluation noise, then the training noise
    g = _gen(4)
    w = torch.randn(p, d, generator=g, dtype=torch.float64)
    rf._Evaluator(train, test, t=t, num_eval_noise=2, generator=g)
    xs = train.repeat(m, 1)
    xi = torch.randn(xs.shape, generator=g, dtype=torch.float64)
    phi = rf.rf_features(w, rf.noised(xs, xi, t))
    u, v = phi.T @ phi / phi.shape[0], phi.T @ xi / phi.shape[0]
    np.testing.assert_allclose(ridged["A"], rf.rf_ridge_solution(u, v, t=t, ridge=lam).numpy(), rtol=1e-7, atol=1e-9)
    # the ridge bounds A at long times (p > N m: unpenalized, the frozen draws are fitted with a huge A whose
    # loss on fresh evaluation noise explodes) and leaves the start (tau = 1) almost alone
    assert np.linalg.norm(ridged["A"]) < 0.2 * np.linalg.norm(plain["A"])
    assert ridged["train_loss"][-1] < 0.2 * plain["train_loss"][-1]
    np.testing.assert_allclose(ridged["train_loss"][0], plain["train_loss"][0], rtol=1e-3)


def test_gradient_descent_with_ridge_follows_the_flow_with_ridge():
    train, test, d, p, m = _ridge_problem(41)
    t, lam = 0.2, 0.05
    lr = 0.02 * d**2  # d tau = 0.02
    kw = dict(p=p, t=t, num_noise=m, num_eval_noise=4)  # a fresh generator per call: the same W and draws
    gd = rf.train_random_features(train, test, generator=_gen(8), lr=lr, num_steps=4000, resample_noise=False,
                                  record_steps=[0, 100, 1000, 4000], ridge=lam, **kw)
    flow = rf.rf_gradient_flow(train, test, generator=_gen(8), taus=list(gd["tau"]), ridge=lam, **kw)
    for key in ("train_loss", "test_loss", "score_error"):
        np.testing.assert_allclose(gd[key], flow[key], rtol=0.01)
    # the readout A itself: GD sits on the ridged flow, measurably away from the unridged one
    unridged = rf.rf_gradient_flow(train, test, generator=_gen(8), taus=list(gd["tau"]), **kw)
    off = np.linalg.norm(gd["A"] - flow["A"])
    assert off < 0.01 * np.linalg.norm(flow["A"])
    assert np.linalg.norm(gd["A"] - unridged["A"]) > 10 * off


def test_gap_level_time_of_an_exponential_approach():
    taus = np.geomspace(1e-2, 1e5, 600)
    tau0 = 40.0
    gap = 0.3 * -np.expm1(-taus / tau0)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        got = rf.gap_level_time(np.ones_like(taus), 1.0 + gap, taus, level=q)
        assert math.isclose(got, -tau0 * math.log(1 - q), rel_tol=3e-3), (q, got)
    assert rf.half_gap_time(np.ones_like(taus), 1.0 + gap, taus) == rf.gap_level_time(
        np.ones_like(taus), 1.0 + gap, taus, level=0.5)
    # two modes, fast and slow, with equal weight: the low levels read the fast one, the high the slow one
    two = 0.5 * -np.expm1(-taus / 1.0) + 0.5 * -np.expm1(-taus / 1000.0)
    assert rf.gap_level_time(np.zeros_like(taus), two, taus, level=0.25) < 2.0
    assert rf.gap_level_time(np.zeros_like(taus), two, taus, level=0.75) > 500.0
