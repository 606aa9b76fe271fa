import numpy as np
import pytest

from diffmem.scoring import distance_ratio, fraction_with_se, memorized, nearest_neighbors


def test_exact_against_brute_force(rng):
    ref = rng.normal(size=(300, 10)).astype(np.float32)
    q = rng.normal(size=(77, 10)).astype(np.float32)
    d, i = nearest_neighbors(q, ref, k=2, chunk_size=16)
    full = np.sqrt(((q[:, None, :].astype(np.float64) - ref[None]) ** 2).sum(-1))
    order = np.argsort(full, axis=1)[:, :2]
    assert np.array_equal(i, order)
    assert np.allclose(d, np.take_along_axis(full, order, axis=1), rtol=1e-12)


def test_planted_duplicate_is_memorized(rng):
    train = rng.normal(size=(200, 64)).astype(np.float32) * 10
    fresh = rng.normal(size=(50, 64)).astype(np.float32) * 10
    copies = train[:50] + 1e-3 * rng.normal(size=(50, 64)).astype(np.float32)
    d, i = nearest_neighbors(np.concatenate([copies, fresh]), train, k=2)
    mask = memorized(d[:, 0], d[:, 1], ratio_threshold=1 / 3)
    assert mask[:50].all() and not mask[50:].any()
    assert np.array_equal(i[:50, 0], np.arange(50))
    assert d[:50, 0].max() < 0.05  # exact recheck keeps d1 of a copy tiny (no float32 cancellation)


def test_ratio_edge_cases():
    r = distance_ratio(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 2.0]))
    assert r[0] == 0 and np.isinf(r[1]) and r[2] == 0


def test_fraction_bootstrap_se_matches_binomial(rng):
    mask = rng.random(4000) < 0.3
    f, se = fraction_with_se(mask, num_bootstrap=400, rng=rng)
    assert f == pytest.approx(mask.mean())
    assert se == pytest.approx(np.sqrt(f * (1 - f) / mask.size), rel=0.15)


def _brute_force(q, ref, k):
    full = np.sqrt(((np.asarray(q, np.float64)[:, None, :] - np.asarray(ref, np.float64)[None]) ** 2).sum(-1))
    return np.sort(full, axis=1)[:, :k]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_on_offset_lattice(seed, dtype):
    # 3,000 lattice points offset by 1,000 in 16 dims, 300 queries: before centring and the error
    # bound, 12-16 of the 600 distances differed from a float64 brute force (the float32 key
    # ||r||^2 - 2 q.r is ~1.6e7 there, its rounding ~1, larger than the gaps between neighbours)
    rng = np.random.default_rng(seed)
    ref = (rng.integers(0, 5, size=(3000, 16)) + 1000.0).astype(dtype)
    q = (rng.uniform(0, 4, size=(300, 16)) + 1000.0).astype(dtype)
    d, i = nearest_neighbors(q, ref, k=2, chunk_size=128)
    assert np.abs(d - _brute_force(q, ref, 2)).max() < 1e-9
    # the indices point at points at those distances (ties may pick either of equal points)
    recomputed = np.sqrt(((q[:, None, :].astype(np.float64) - ref[i].astype(np.float64)) ** 2).sum(-1))
    assert np.abs(recomputed - d).max() < 1e-9


def test_exact_for_tiny_scale_and_large_offset(rng):
    ref = rng.normal(size=(2000, 8)) * 1e-3 + 5e3
    q = rng.normal(size=(200, 8)) * 1e-3 + 5e3
    d, _ = nearest_neighbors(q, ref, k=3)
    assert np.abs(d - _brute_force(q, ref, 3)).max() < 1e-12


def test_ties_widen_the_candidate_list(rng):
    # a query at the centre of a unit cube of lattice points has 2^4 = 16 equidistant neighbours,
    # more than the 8 candidates: the row must be widened (and every distance is still exact)
    ref = np.stack(np.meshgrid(*[np.arange(4.0)] * 4, indexing="ij"), -1).reshape(-1, 4) + 100.0
    q = np.full((1, 4), 101.5)
    d, i, widened = nearest_neighbors(q, ref, k=2, num_candidates=8, return_stats=True)
    assert widened == 1 and np.allclose(d, 1.0)


def test_float32_rank_error_bounds_the_float32_key(rng):
    import torch

    from diffmem.scoring import float32_rank_error

    ref = rng.normal(size=(500, 256)) * 3 + 0.5
    q = rng.normal(size=(50, 256)) * 3 + 0.5
    exact = (ref**2).sum(1)[None, :] - 2 * q @ ref.T  # [50, 500]
    r32, q32 = torch.as_tensor(ref, dtype=torch.float32), torch.as_tensor(q, dtype=torch.float32)
    approx = torch.addmm((r32 * r32).sum(1), q32, r32.T, alpha=-2.0).double().numpy()
    bound = float32_rank_error(dim=256, query_norm=torch.as_tensor(np.linalg.norm(q, axis=1)),
                               ref_norm_max=float(np.linalg.norm(ref, axis=1).max())).numpy()
    observed = np.abs(approx - exact).max(axis=1)
    assert (observed <= bound).all() and (observed > 0).any()


def test_fraction_of_a_boolean_mask_counts_bit_for_bit_like_the_float_mean(rng):
    # the boolean path counts each resample's memorized samples; the float path (any other mask) averages
    # them as float64, as the function always did: the same draws, the same fraction and standard error
    for p in (0.0, 0.03, 0.5, 0.97, 1.0):
        mask = rng.random(500) < p
        counted = fraction_with_se(mask, num_bootstrap=200, rng=np.random.default_rng(1))
        averaged = fraction_with_se(mask.astype(np.float64), num_bootstrap=200, rng=np.random.default_rng(1))
        assert counted == averaged, p
