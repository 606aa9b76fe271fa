/* The default MLP's training step on one CPU core: loss and gradients of k members in one call.
 *
 * What it computes is models/mlp_grad.py's mlp_loss_and_grads (the forward of models/mlp.py's MLP
 * behind a preconditioning, the weighted denoising loss, and the backward), with other roundings:
 * activations are kept feature-major, [features, NB] with the batch padded to NB (a multiple of 8)
 * along the fast axis, so every layer is a small GEMM whose inner loop runs over 8-wide AVX2 vectors of
 * batch rows, layer norms reduce over rows of vectors, and nothing is transposed except the inputs
 * and, for each weight gradient, the layer's input. Padded batch columns carry zeros and a zero row
 * scale, so they add nothing to the loss or to any gradient.
 *
 * Also here: mlp_step_precond (the step with the preconditioning's inputs made in C), mlp_forward (the
 * network alone, for sampling), mlp_heun (a Heun trajectory of samples around it), adam_update (the optimizer's
 * update, as torch's fused Adam computes it) and mlp_train_steps (consecutive steps of one member, each
 * mlp_step_precond then adam_update).
 *
 * Built by diffmem.native at first use ($CC -O3 -funroll-loops -std=c11 -mavx2 -mfma); see that module for why
 * those flags.
 * It needs AVX2 and FMA: the loader refuses other machines, which keep torch's kernels.
 */

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LN_EPS 1e-5f

/* ---------------------------------------------------------------- vector math */

/* exp(x) for 8 floats: Cody-Waite range reduction and a degree-6 polynomial (Cephes expf), ~1 ulp. */
static inline __m256 exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365478515625f);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y = silu(x) = x s, s = sigmoid(x), kept in sig (NULL: not kept) for the backward; n a multiple of 8 */
static void silu(const float *x, float *y, float *sig, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), s = sigmoid8(v);
        if (sig) _mm256_storeu_ps(sig + i, s);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, s));
    }
}

/* g_in = g * silu'(x) = g * s (1 + x (1 - s)), with s = sigmoid(x) as silu kept it */
static void silu_back(const float *g, const float *x, const float *sig, float *g_in, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), s = _mm256_loadu_ps(sig + i);
        __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one));
        _mm256_storeu_ps(g_in + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), d));
    }
}

/* ---------------------------------------------------------------- GEMM
 * C[M, N] (row stride ldc) = (acc ? C : bias-or-0) + sum_k A(m, k) B[k, N], A(m, k) = A[m rsa + k csa],
 * B row-major with row stride ldb, N a multiple of 8. A bias, if given, is added per row m.
 * Register tiles of MR rows x NV vectors of 8 columns (6 x 2: 12 accumulators).
 * The forward for sampling (gemm_then) also adds `post` per row m after the sum; the training step's gemm does
 * not (the same operations as without it). An activation applied in the tiles before the store doubled the
 * GEMM's time (register pressure); the forward applies silu in a pass of its own. */

static inline __attribute__((always_inline)) void tile(int mr, int nv, int K, const float *A, ptrdiff_t rsa,
                                                       ptrdiff_t csa, const float *B, ptrdiff_t ldb, float *C,
                                                       ptrdiff_t ldc, int acc, const float *bias, const float *post) {
    __m256 c[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
        if (r >= mr) break;
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            if (v >= nv) break;
            if (acc) c[r][v] = _mm256_loadu_ps(C + r * ldc + 8 * v);
            else if (bias) c[r][v] = _mm256_set1_ps(bias[r]);
            else c[r][v] = _mm256_setzero_ps();
        }
    }
    for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb;
        __m256 b0 = _mm256_loadu_ps(b), b1 = nv > 1 ? _mm256_loadu_ps(b + 8) : b0;
        const float *a = A + k * csa;
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r >= mr) break;
            __m256 ar = _mm256_broadcast_ss(a + r * rsa);
            c[r][0] = _mm256_fmadd_ps(ar, b0, c[r][0]);
            if (nv > 1) c[r][1] = _mm256_fmadd_ps(ar, b1, c[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
        if (r >= mr) break;
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            if (v >= nv) break;
            __m256 y = c[r][v];
            if (post) y = _mm256_add_ps(y, _mm256_set1_ps(post[r]));
            _mm256_storeu_ps(C + r * ldc + 8 * v, y);
        }
    }
}

#define TILE(MR, NV) tile(MR, NV, K, A + m * rsa, rsa, csa, B + n, ldb, C + m * ldc + n, ldc, acc, bias ? bias + m : NULL, \
                          post ? post + m : NULL)

static inline __attribute__((always_inline)) void gemm_then(int M, int N, int K, const float *A, ptrdiff_t rsa,
                                                            ptrdiff_t csa, const float *B, ptrdiff_t ldb, float *C,
                                                            ptrdiff_t ldc, int acc, const float *bias, const float *post) {
    for (int n = 0; n < N; n += 16) {
        int nv = N - n >= 16 ? 2 : 1;
        int m = 0;
        if (nv == 2) {
            for (; m + 6 <= M; m += 6) TILE(6, 2);
            switch (M - m) {
                case 5: TILE(5, 2); break;
                case 4: TILE(4, 2); break;
                case 3: TILE(3, 2); break;
                case 2: TILE(2, 2); break;
                case 1: TILE(1, 2); break;
                default: break;
            }
        } else {
            for (; m + 6 <= M; m += 6) TILE(6, 1);
            switch (M - m) {
                case 5: TILE(5, 1); break;
                case 4: TILE(4, 1); break;
                case 3: TILE(3, 1); break;
                case 2: TILE(2, 1); break;
                case 1: TILE(1, 1); break;
                default: break;
            }
        }
    }
}

static void gemm(int M, int N, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa, const float *B, ptrdiff_t ldb,
                 float *C, ptrdiff_t ldc, int acc, const float *bias) {
    gemm_then(M, N, K, A, rsa, csa, B, ldb, C, ldc, acc, bias, NULL);
}

/* y[O, NB] = W[O, I] x[I, NB] + b */
static void linear(int O, int I, int NB, const float *W, const float *b, const float *x, float *y) {
    gemm(O, NB, I, W, I, 1, x, NB, y, NB, 0, b);
}

/* dx[I, NB] (+)= W^T g, g [O, NB] */
static void linear_back_input(int O, int I, int NB, const float *W, const float *g, float *dx, int acc) {
    gemm(I, NB, O, W, 1, I, g, NB, dx, NB, acc, NULL);
}

/* dW[O, I] = g [O, NB] x^T, with x [I, NB] given as xt [NB, I]; db[O] = row sums of g */
static void linear_back_weight(int O, int I, int NB, const float *g, const float *xt, float *dW, float *db) {
    if (I % 8 == 0) {
        gemm(O, I, NB, g, NB, 1, xt, I, dW, I, 0, NULL);
    } else {  /* an input width that is not a multiple of 8: plain loops */
        for (int o = 0; o < O; o++)
            for (int i = 0; i < I; i++) {
                float s = 0.0f;
                for (int b = 0; b < NB; b++) s += g[o * NB + b] * xt[b * I + i];
                dW[o * I + i] = s;
            }
    }
    for (int o = 0; o < O; o++) {
        __m256 s = _mm256_setzero_ps();
        for (int b = 0; b < NB; b += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(g + o * NB + b));
        db[o] = hsum8(s);
    }
}

/* the 8 x 8 block at src (row stride ss) transposed into dst (row stride ds) */
static inline void transpose8(const float *src, ptrdiff_t ss, float *dst, ptrdiff_t ds) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
           r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
           r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* xt[NB, F] = transpose of x[F, NB] (NB a multiple of 8) */
static void transpose(int F, int NB, const float *x, float *xt) {
    int f = 0;
    for (; f + 8 <= F; f += 8)
        for (int b = 0; b < NB; b += 8) transpose8(x + (size_t)f * NB + b, NB, xt + (size_t)b * F + f, F);
    for (; f < F; f++)
        for (int b = 0; b < NB; b++) xt[b * F + f] = x[f * NB + b];
}

/* y[F, NB] += bias[f] on every column */
static void add_bias(int F, int NB, const float *bias, float *y) {
    for (int f = 0; f < F; f++) {
        __m256 bv = _mm256_set1_ps(bias[f]);
        for (int b = 0; b < NB; b += 8)
            _mm256_storeu_ps(y + f * NB + b, _mm256_add_ps(_mm256_loadu_ps(y + f * NB + b), bv));
    }
}

/* out[F, NB] = rows[B, F] transposed, row b scaled by scale[b] (NULL: 1), padded columns zero */
static void feature_major(int B, int NB, int F, const float *rows, const float *scale, float *out) {
    memset(out, 0, sizeof(float) * (size_t)F * NB);
    for (int b = 0; b < B; b++) {
        const float c = scale ? scale[b] : 1.0f;
        for (int f = 0; f < F; f++) out[f * NB + b] = scale ? c * rows[b * F + f] : rows[b * F + f];
    }
}

/* ---------------------------------------------------------------- layer norm over features (rows) */

/* The mean and 1 / sqrt(variance + eps) over the F features of the 8 columns at h (column stride NB) */
static inline void column_stats(int F, int NB, const float *h, __m256 *mean, __m256 *rstd) {
    const __m256 inv_f = _mm256_set1_ps(1.0f / (float)F), eps = _mm256_set1_ps(LN_EPS), one = _mm256_set1_ps(1.0f);
    __m256 s = _mm256_setzero_ps();
    for (int f = 0; f < F; f++) s = _mm256_add_ps(s, _mm256_loadu_ps(h + f * NB));
    __m256 mu = _mm256_mul_ps(s, inv_f), q = _mm256_setzero_ps();
    for (int f = 0; f < F; f++) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(h + f * NB), mu);
        q = _mm256_fmadd_ps(d, d, q);
    }
    *mean = mu;
    *rstd = _mm256_div_ps(one, _mm256_sqrt_ps(_mm256_fmadd_ps(q, inv_f, eps)));
}

/* y = (h - mean) rstd gamma + beta per column; keeps mean and rstd [NB] */
static void layer_norm(int F, int NB, const float *h, const float *gamma, const float *beta, float *y, float *mean,
                       float *rstd) {
    for (int b = 0; b < NB; b += 8) {
        __m256 mu, r;
        column_stats(F, NB, h + b, &mu, &r);
        _mm256_storeu_ps(mean + b, mu);
        _mm256_storeu_ps(rstd + b, r);
        for (int f = 0; f < F; f++) {
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(h + f * NB + b), mu), r);
            _mm256_storeu_ps(y + f * NB + b,
                             _mm256_fmadd_ps(xh, _mm256_set1_ps(gamma[f]), _mm256_set1_ps(beta[f])));
        }
    }
}

/* dh (+)= the layer norm's input gradient for upstream g; dgamma, dbeta written */
static void layer_norm_back(int F, int NB, const float *g, const float *h, const float *mean, const float *rstd,
                            const float *gamma, float *dh, float *dgamma, float *dbeta, int acc) {
    const __m256 inv_f = _mm256_set1_ps(1.0f / (float)F);
    for (int f = 0; f < F; f++) {
        __m256 sg = _mm256_setzero_ps(), sgx = _mm256_setzero_ps();
        for (int b = 0; b < NB; b += 8) {
            __m256 gv = _mm256_loadu_ps(g + f * NB + b);
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(h + f * NB + b), _mm256_loadu_ps(mean + b)),
                                      _mm256_loadu_ps(rstd + b));
            sg = _mm256_add_ps(sg, gv);
            sgx = _mm256_fmadd_ps(gv, xh, sgx);
        }
        dbeta[f] = hsum8(sg);
        dgamma[f] = hsum8(sgx);
    }
    for (int b = 0; b < NB; b += 8) {
        __m256 mu = _mm256_loadu_ps(mean + b), r = _mm256_loadu_ps(rstd + b);
        __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
        for (int f = 0; f < F; f++) {
            __m256 gx = _mm256_mul_ps(_mm256_loadu_ps(g + f * NB + b), _mm256_set1_ps(gamma[f]));
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(h + f * NB + b), mu), r);
            s1 = _mm256_add_ps(s1, gx);
            s2 = _mm256_fmadd_ps(gx, xh, s2);
        }
        s1 = _mm256_mul_ps(s1, inv_f);
        s2 = _mm256_mul_ps(s2, inv_f);
        for (int f = 0; f < F; f++) {
            __m256 gx = _mm256_mul_ps(_mm256_loadu_ps(g + f * NB + b), _mm256_set1_ps(gamma[f]));
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(h + f * NB + b), mu), r);
            __m256 d = _mm256_mul_ps(r, _mm256_sub_ps(_mm256_sub_ps(gx, s1), _mm256_mul_ps(xh, s2)));
            if (acc) d = _mm256_add_ps(d, _mm256_loadu_ps(dh + f * NB + b));
            _mm256_storeu_ps(dh + f * NB + b, d);
        }
    }
}

/* ---------------------------------------------------------------- the step */

enum { DIM_K, DIM_B, DIM_NB, DIM_D, DIM_E, DIM_W, DIM_L, DIM_COUNT };

/* Parameters, in this order (the Python side passes one [k, ...] base pointer each):
 * emb_mlp.0.weight [W, E], emb_mlp.0.bias [W], emb_mlp.2.weight [W, W], emb_mlp.2.bias [W],
 * inp.weight [W, D], inp.bias [W],
 * per block: norm.weight [W], norm.bias [W], fc1.weight [W, W], fc1.bias [W], emb.weight [W, W],
 *            emb.bias [W], fc2.weight [W, W], fc2.bias [W],
 * out_norm.weight [W], out_norm.bias [W], out.weight [D, W], out.bias [D]. */
static int64_t param_count(const int64_t *dims) { return 6 + 8 * dims[DIM_L] + 4; }

static void param_sizes(const int64_t *dims, int64_t *sizes) {
    int64_t D = dims[DIM_D], E = dims[DIM_E], W = dims[DIM_W], L = dims[DIM_L], j = 0;
    sizes[j++] = W * E; sizes[j++] = W; sizes[j++] = W * W; sizes[j++] = W; sizes[j++] = W * D; sizes[j++] = W;
    for (int64_t l = 0; l < L; l++) {
        sizes[j++] = W; sizes[j++] = W; sizes[j++] = W * W; sizes[j++] = W;
        sizes[j++] = W * W; sizes[j++] = W; sizes[j++] = W * W; sizes[j++] = W;
    }
    sizes[j++] = W; sizes[j++] = W; sizes[j++] = D * W; sizes[j++] = D;
}

/* Floats of scratch one call needs (for one member at a time). */
int64_t mlp_step_workspace(const int64_t *dims) {
    int64_t NB = dims[DIM_NB], D = dims[DIM_D], E = dims[DIM_E], W = dims[DIM_W], L = dims[DIM_L];
    int64_t F = W > D ? W : D;
    F = F > E ? F : E;
    /* activations: xin, enc, outF, diff/g_f [D or E, NB]; e1 a1 e2 emb oln oa [W, NB]; per block h ln a z sz,
     * plus h_L; the sigmoids of e1 e2 oln and of each block's ln and z; stats 2 (L + 1) NB; gradients g_h g_emb
     * g1 g2 [W, NB]; one transposed input [NB, F] */
    return (3 * D + E) * NB + 6 * W * NB + (5 * L + 1) * W * NB + (2 * L + 3) * W * NB + 2 * (L + 1) * NB +
           4 * W * NB + NB * F + 64;
}

int64_t mlp_step_abi(void) { return 2; }

/* One step for k members.
 * x0, x: [k, B, D] clean and noisy data; enc: [k, B, E] the noise-level encoding; c_skip (NULL: 1),
 * c_out, c_in, weight, rowscale: [k, B] (rowscale: d loss / d per-sample loss, 1/B without padding).
 * Writes losses [k] (sum_b rowscale weight mean_d (x0_hat - x0)^2) and every gradient. */
void mlp_step(const int64_t *dims, const float *const *params, float *const *grads, const float *x0, const float *x,
              const float *enc, const float *c_skip, const float *c_out, const float *c_in, const float *weight,
              const float *rowscale, float *losses, float *work) {
    const int K = (int)dims[DIM_K], B = (int)dims[DIM_B], NB = (int)dims[DIM_NB], D = (int)dims[DIM_D],
              E = (int)dims[DIM_E], W = (int)dims[DIM_W], L = (int)dims[DIM_L];
    const int64_t np = param_count(dims);
    int64_t sizes[6 + 8 * 64 + 4];
    param_sizes(dims, sizes);
    const size_t WN = (size_t)W * NB;

    float *w = work;
    float *xin = w; w += (size_t)D * NB;
    float *enct = w; w += (size_t)E * NB;
    float *outf = w; w += (size_t)D * NB;
    float *gf = w; w += (size_t)D * NB;
    float *e1 = w; w += WN;
    float *a1 = w; w += WN;
    float *e2 = w; w += WN;
    float *emb = w; w += WN;
    float *oln = w; w += WN;
    float *oa = w; w += WN;
    float *hs = w; w += (size_t)(L + 1) * WN;  /* h_0 ... h_L */
    float *lns = w; w += (size_t)L * WN;
    float *as = w; w += (size_t)L * WN;
    float *zs = w; w += (size_t)L * WN;
    float *szs = w; w += (size_t)L * WN;
    float *s_e1 = w; w += WN;  /* sigmoids kept by the forward's silu for the backward */
    float *s_e2 = w; w += WN;
    float *s_oln = w; w += WN;
    float *s_lns = w; w += (size_t)L * WN;
    float *s_zs = w; w += (size_t)L * WN;
    float *means = w; w += (size_t)(L + 1) * NB;
    float *rstds = w; w += (size_t)(L + 1) * NB;
    float *g_h = w; w += WN;
    float *g_emb = w; w += WN;
    float *g1 = w; w += WN;
    float *g2 = w; w += WN;
    float *xt = w;

    for (int m = 0; m < K; m++) {
        const float *p[6 + 8 * 64 + 4];
        float *g[6 + 8 * 64 + 4];
        for (int64_t j = 0; j < np; j++) {
            p[j] = params[j] + (size_t)m * sizes[j];
            g[j] = grads[j] + (size_t)m * sizes[j];
        }
        const float *mx0 = x0 + (size_t)m * B * D, *mx = x + (size_t)m * B * D, *menc = enc + (size_t)m * B * E;
        const float *mskip = c_skip ? c_skip + (size_t)m * B : NULL, *mout = c_out + (size_t)m * B,
                    *min = c_in + (size_t)m * B, *mw = weight + (size_t)m * B, *mrow = rowscale + (size_t)m * B;

        /* inputs, feature-major, padded columns zero */
        feature_major(B, NB, D, mx, min, xin);
        feature_major(B, NB, E, menc, NULL, enct);

        /* ---- forward */
        linear(W, E, NB, p[0], p[1], enct, e1);
        silu(e1, a1, s_e1, WN);
        linear(W, W, NB, p[2], p[3], a1, e2);
        silu(e2, emb, s_e2, WN);
        linear(W, D, NB, p[4], p[5], xin, hs);
        for (int l = 0; l < L; l++) {
            const float *const *q = p + 6 + 8 * l;
            float *h = hs + l * WN, *hn = hs + (l + 1) * WN, *ln = lns + l * WN, *a = as + l * WN, *z = zs + l * WN,
                  *sz = szs + l * WN;
            layer_norm(W, NB, h, q[0], q[1], ln, means + l * NB, rstds + l * NB);
            silu(ln, a, s_lns + l * WN, WN);
            linear(W, W, NB, q[2], q[3], a, z);
            gemm(W, NB, W, q[4], W, 1, emb, NB, z, NB, 1, NULL);  /* + emb.weight emb */
            add_bias(W, NB, q[5], z);                              /* + emb.bias */
            silu(z, sz, s_zs + l * WN, WN);
            memcpy(hn, h, sizeof(float) * WN);
            gemm(W, NB, W, q[6], W, 1, sz, NB, hn, NB, 1, NULL);    /* h + fc2.weight sz */
            add_bias(W, NB, q[7], hn);
        }
        const float *const *t = p + 6 + 8 * L;
        layer_norm(W, NB, hs + L * WN, t[0], t[1], oln, means + L * NB, rstds + L * NB);
        silu(oln, oa, s_oln, WN);
        linear(D, W, NB, t[2], t[3], oa, outf);

        /* ---- loss and its gradient with respect to the network's output */
        memset(gf, 0, sizeof(float) * (size_t)D * NB);
        double loss = 0.0;
        for (int b = 0; b < B; b++) {
            float cs = mskip ? mskip[b] : 1.0f, co = mout[b], err = 0.0f;
            for (int d = 0; d < D; d++) {
                float diff = cs * mx[b * D + d] + co * outf[d * NB + b] - mx0[b * D + d];
                err += diff * diff;
                outf[d * NB + b] = diff;
            }
            float coef = mrow[b] * mw[b];
            loss += (double)(coef * (err / (float)D));
            float scale = coef / (float)D * 2.0f * co;
            for (int d = 0; d < D; d++) gf[d * NB + b] = scale * outf[d * NB + b];
        }
        losses[m] = (float)loss;

        /* ---- backward */
        float *const *gt = g + 6 + 8 * L;
        transpose(W, NB, oa, xt);
        linear_back_weight(D, W, NB, gf, xt, gt[2], gt[3]);
        linear_back_input(D, W, NB, t[2], gf, g1, 0);          /* g_oa */
        silu_back(g1, oln, s_oln, g2, WN);                      /* g_oln */
        layer_norm_back(W, NB, g2, hs + L * WN, means + L * NB, rstds + L * NB, t[0], g_h, gt[0], gt[1], 0);
        for (int l = L - 1; l >= 0; l--) {
            const float *const *q = p + 6 + 8 * l;
            float *const *gq = g + 6 + 8 * l;
            float *h = hs + l * WN, *ln = lns + l * WN, *a = as + l * WN, *z = zs + l * WN, *sz = szs + l * WN;
            transpose(W, NB, sz, xt);
            linear_back_weight(W, W, NB, g_h, xt, gq[6], gq[7]);  /* fc2 */
            linear_back_input(W, W, NB, q[6], g_h, g1, 0);        /* g_sz */
            silu_back(g1, z, s_zs + l * WN, g2, WN);              /* g_z */
            transpose(W, NB, emb, xt);
            linear_back_weight(W, W, NB, g2, xt, gq[4], gq[5]);   /* emb projection */
            linear_back_input(W, W, NB, q[4], g2, g_emb, l != L - 1);
            transpose(W, NB, a, xt);
            linear_back_weight(W, W, NB, g2, xt, gq[2], gq[3]);   /* fc1 */
            linear_back_input(W, W, NB, q[2], g2, g1, 0);         /* g_a */
            silu_back(g1, ln, s_lns + l * WN, g2, WN);            /* g_ln */
            layer_norm_back(W, NB, g2, h, means + l * NB, rstds + l * NB, q[0], g_h, gq[0], gq[1], 1);
        }
        if (L == 0) memset(g_emb, 0, sizeof(float) * WN);
        transpose(D, NB, xin, xt);
        linear_back_weight(W, D, NB, g_h, xt, g[4], g[5]);        /* inp */
        silu_back(g_emb, e2, s_e2, g2, WN);                       /* g_e2 */
        transpose(W, NB, a1, xt);
        linear_back_weight(W, W, NB, g2, xt, g[2], g[3]);         /* emb_mlp.2 */
        linear_back_input(W, W, NB, p[2], g2, g1, 0);             /* g_a1 */
        silu_back(g1, e1, s_e1, g2, WN);                          /* g_e1 */
        transpose(E, NB, enct, xt);
        linear_back_weight(W, E, NB, g2, xt, g[0], g[1]);         /* emb_mlp.0 */
    }
}

/* ---------------------------------------------------------------- the forward, for sampling */

/* y[O] = W[O, I] v + b, each output an 8-lane dot product then summed; I a multiple of 8 */
static void matvec(int O, int I, const float *Wm, const float *b, const float *v, float *y) {
    for (int o = 0; o < O; o++) {
        __m256 s = _mm256_setzero_ps();
        for (int i = 0; i < I; i += 8)
            s = _mm256_fmadd_ps(_mm256_loadu_ps(Wm + (size_t)o * I + i), _mm256_loadu_ps(v + i), s);
        y[o] = hsum8(s) + b[o];
    }
}

/* y[F, NC] = silu(layer norm of h[F, NC]) per column, as layer_norm then silu compute it (stats not kept) */
static void layer_norm_silu(int F, int NC, const float *h, const float *gamma, const float *beta, float *y) {
    for (int b = 0; b < NC; b += 8) {
        __m256 mu, r;
        column_stats(F, NC, h + b, &mu, &r);
        for (int f = 0; f < F; f++) {
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(h + f * NC + b), mu), r);
            __m256 v = _mm256_fmadd_ps(xh, _mm256_set1_ps(gamma[f]), _mm256_set1_ps(beta[f]));
            _mm256_storeu_ps(y + f * NC + b, _mm256_mul_ps(v, sigmoid8(v)));
        }
    }
}

#define FORWARD_COLUMNS 64  /* batch columns carried through the whole network at a time */

/* The network's forward alone, for sampling: out [k, B, D] = F(x_in, c_noise) of each member, given xin_rows
 * [k, B, D] (already scaled by c_in) and enc [k, B, E]. `work` holds mlp_step_workspace(dims) floats.
 *
 * Everything of the time embedding depends on the noise level only, and a sampler evaluates a whole batch at one
 * level: the embedding MLP and every block's projection of it are computed once per run of equal rows of enc (a
 * sampler's batch: once), as matrix-vector products, and each block's projection is folded, with fc1's bias, into
 * the constant that block's z starts from (0.61 of the network's multiply-adds remain). The rest runs through the
 * network FORWARD_COLUMNS batch columns at a time, so a block's activations stay in the core's caches; layer
 * norm and silu are one pass, fc2's bias is added as each GEMM tile is stored, silu(z) in a pass after fc1's GEMM
 * (in the tiles it doubled the GEMM's time: registers). Every column is
 * computed by the same operations whatever the batch, its size or the other rows' noise levels (a row starts
 * from its own level's constants either way), so a sample does not depend on the batch it is in. The numbers
 * differ from mlp_step's forward (and torch's) by float rounding: other sums, in another order. */
void mlp_forward(const int64_t *dims, const float *const *params, const float *xin_rows, const float *enc,
                 float *out, float *work) {
    const int K = (int)dims[DIM_K], B = (int)dims[DIM_B], NB = (int)dims[DIM_NB], D = (int)dims[DIM_D],
              E = (int)dims[DIM_E], W = (int)dims[DIM_W], L = (int)dims[DIM_L];
    const int64_t np = param_count(dims);
    const int NC = NB < FORWARD_COLUMNS ? NB : FORWARD_COLUMNS;
    int64_t sizes[6 + 8 * 64 + 4];
    param_sizes(dims, sizes);
    /* scratch (within mlp_step_workspace: B <= NB, L W NB <= its blocks' activations, the rest <= its 6 W NB
     * and (3 D + E) NB): each row's level index, e1 and emb [W], the levels' constants [levels, L, W], then
     * one column chunk's x [D, NC], h, a, z [W, NC] and output [D, NC] */
    int32_t *level = (int32_t *)work;
    float *e1 = work + NB, *emb = e1 + W, *cst = emb + W;
    for (int m = 0; m < K; m++) {
        const float *p[6 + 8 * 64 + 4];
        for (int64_t j = 0; j < np; j++) p[j] = params[j] + (size_t)m * sizes[j];
        const float *mx = xin_rows + (size_t)m * B * D, *menc = enc + (size_t)m * B * E;
        float *mo = out + (size_t)m * B * D;
        int levels = 0;
        for (int b = 0; b < B; b++) {
            const float *eb = menc + (size_t)b * E;
            if (b > 0 && memcmp(eb, eb - E, sizeof(float) * (size_t)E) == 0) {
                level[b] = levels - 1;
                continue;
            }
            matvec(W, E, p[0], p[1], eb, e1);
            silu(e1, e1, NULL, W);
            matvec(W, W, p[2], p[3], e1, emb);
            silu(emb, emb, NULL, W);
            float *c = cst + (size_t)levels * L * W;
            for (int l = 0; l < L; l++) {
                const float *const *q = p + 6 + 8 * l;
                matvec(W, W, q[4], q[5], emb, c + l * W);                  /* emb.weight emb + emb.bias */
                for (int o = 0; o < W; o++) c[l * W + o] += q[3][o];       /* + fc1.bias */
            }
            level[b] = levels++;
        }
        float *x = cst + (size_t)levels * L * W, *h = x + (size_t)D * NC, *a = h + (size_t)W * NC,
              *z = a + (size_t)W * NC, *o = z + (size_t)W * NC;
        for (int c0 = 0; c0 < NB; c0 += NC) {
            const int nc = NB - c0 < NC ? NB - c0 : NC, valid = B - c0 < nc ? B - c0 : nc;
            if (valid <= 0) break;
            memset(x, 0, sizeof(float) * (size_t)D * nc);
            for (int j = 0; j < valid; j++)
                for (int f = 0; f < D; f++) x[f * nc + j] = mx[(size_t)(c0 + j) * D + f];
            const int first = level[c0], last = level[c0 + valid - 1];
            gemm_then(W, nc, D, p[4], D, 1, x, nc, h, nc, 0, p[5], NULL);              /* inp */
            for (int l = 0; l < L; l++) {
                const float *const *q = p + 6 + 8 * l;
                layer_norm_silu(W, nc, h, q[0], q[1], a);
                const float *start = cst + ((size_t)first * L + l) * W;
                if (first != last) {  /* rows of several levels: each column starts from its own constants */
                    for (int j = 0; j < nc; j++) {
                        const float *cj = cst + ((size_t)level[c0 + (j < valid ? j : valid - 1)] * L + l) * W;
                        for (int f = 0; f < W; f++) z[f * nc + j] = cj[f];
                    }
                }
                gemm_then(W, nc, W, q[2], W, 1, a, nc, z, nc, first != last, start, NULL);
                silu(z, z, NULL, (size_t)W * nc);  /* apart from the GEMM: in its tiles, twice its time */
                gemm_then(W, nc, W, q[6], W, 1, z, nc, h, nc, 1, NULL, q[7]);              /* h += fc2 */
            }
            const float *const *t = p + 6 + 8 * L;
            layer_norm_silu(W, nc, h, t[0], t[1], a);
            gemm_then(D, nc, W, t[2], W, 1, a, nc, o, nc, 0, t[3], NULL);               /* out */
            for (int j = 0; j < valid; j++)
                for (int f = 0; f < D; f++) mo[(size_t)(c0 + j) * D + f] = o[f * nc + j];
        }
    }
}

/* The slope of the probability-flow ODE at one noise level, d = (x - D(x; sigma)) / sigma, with the denoiser
 * D = c_skip x + c_out F(c_in x, c_noise) of mlp_forward's network evaluated in float32 on x [B, D] rounded to
 * float, and the slope in double: the operations of samplers.py's heun_sampler (d_dsigma) around
 * models/precond.py's `precondition`, one after another with their roundings (C11 contracts nothing into an FMA).
 * coef [3, B]: each row's c_skip, c_out and c_in; enc [B, E]: each row's encoding of c_noise. */
static void heun_slope(const int64_t *dims, const float *const *params, const double *x, double sigma,
                       const float *coef, const float *enc, float *xin, float *out, double *d, float *work) {
    const int B = (int)dims[DIM_B], D = (int)dims[DIM_D];
    const float *c_skip = coef, *c_out = coef + B, *c_in = coef + 2 * B;
    for (int b = 0; b < B; b++)
        for (int f = 0; f < D; f++) xin[(size_t)b * D + f] = c_in[b] * (float)x[(size_t)b * D + f];
    mlp_forward(dims, params, xin, enc, out, work);
    for (int b = 0; b < B; b++)
        for (int f = 0; f < D; f++) {
            const size_t j = (size_t)b * D + f;
            const float skip = c_skip[b] * (float)x[j], scaled = c_out[b] * out[j];
            d[j] = (x[j] - (double)(skip + scaled)) / sigma;
        }
}

/* Heun's method (EDM's Algorithm 1 without churn) on dx/dsigma = (x - D(x; sigma)) / sigma for one member, in
 * place on x [B, D] (double, the latents times sigmas[0]), from sigmas[0] down through sigmas[num_steps] = 0:
 * samplers.py's heun_sampler step for step, each of its double operations in its order, so the same numbers as
 * its loop over the native forward. Level i of coef [num_steps, 3, B] and enc [num_steps, B, E] holds the
 * preconditioning and encoding of sigmas[i] (made by torch, as the module's call makes them). Scratch: x_next,
 * d, d2 [B, D] doubles, xin and out [B, D] floats, work mlp_step_workspace(dims) floats. */
void mlp_heun(const int64_t *dims, const float *const *params, double *x, int64_t num_steps, const double *sigmas,
              const float *coef, const float *enc, double *x_next, double *d, double *d2, float *xin, float *out,
              float *work) {
    const int64_t B = dims[DIM_B], n = B * dims[DIM_D], E = dims[DIM_E];
    for (int64_t i = 0; i < num_steps; i++) {
        const double s_cur = sigmas[i], s_next = sigmas[i + 1], h = s_next - s_cur;
        heun_slope(dims, params, x, s_cur, coef + i * 3 * B, enc + i * B * E, xin, out, d, work);
        for (int64_t j = 0; j < n; j++) x_next[j] = x[j] + h * d[j];
        if (s_next > 0) {
            heun_slope(dims, params, x_next, s_next, coef + (i + 1) * 3 * B, enc + (i + 1) * B * E, xin, out, d2,
                       work);
            const double half = h * 0.5;
            for (int64_t j = 0; j < n; j++) x[j] = x[j] + half * (d[j] + d2[j]);
        } else {
            memcpy(x, x_next, sizeof(double) * (size_t)n);
        }
    }
}

/* ---------------------------------------------------------------- the step with its inputs made here */

/* Floats of scratch mlp_step_precond needs: mlp_step's, plus the noisy data, the encoding and five per-row
 * coefficients. */
int64_t mlp_step_precond_workspace(const int64_t *dims) {
    return mlp_step_workspace(dims) + dims[DIM_K] * dims[DIM_B] * (dims[DIM_D] + dims[DIM_E] + 5);
}

/* VPPrecond.sigma_to_t: the continuous timestep of sigma, by linear interpolation of log sigma_t on the
 * schedule's grid log_s [T] (increasing), in double as there */
static float sigma_to_t(float sigma, const double *log_s, int64_t T) {
    double ls = log((double)sigma);
    ls = ls < log_s[0] ? log_s[0] : (ls > log_s[T - 1] ? log_s[T - 1] : ls);
    int64_t lo = 0, hi = T;  /* searchsorted (left): the first index with log_s[i] >= ls */
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (log_s[mid] < ls) lo = mid + 1; else hi = mid;
    }
    int64_t idx = lo < 1 ? 1 : (lo > T - 1 ? T - 1 : lo);
    return (float)((double)(idx - 1) + (ls - log_s[idx - 1]) / (log_s[idx] - log_s[idx - 1]));
}

/* mlp_step behind models/precond.py's preconditioning, computing here what the torch side would: the noisy
 * input x = x0 + sigma noise, the coefficients, the loss weight and models/mlp.py's encoding
 * [cos(c_noise f_j) | sin(c_noise f_j)] with freqs [k, E/2]. kind 0, EDMPrecond (sigma_data): c_skip =
 * sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2), c_noise = 250 ln s, weight
 * (s^2 + sd^2) / (s sd)^2. kind 1, VPPrecond (log_sigmas [T]): c_skip = 1, c_out = -s, c_in = 1 / sqrt(1 + s^2),
 * c_noise = sigma_to_t(s), weight 1 / s^2. rowscale [k, B] as for mlp_step, or NULL for 1/B. */
void mlp_step_precond(const int64_t *dims, const float *const *params, float *const *grads, const float *x0,
                      const float *sigma, const float *noise, const float *freqs, int64_t kind, double sigma_data,
                      const double *log_sigmas, int64_t num_t, const float *rowscale, float *losses, float *work) {
    const int64_t K = dims[DIM_K], B = dims[DIM_B], D = dims[DIM_D], E = dims[DIM_E], half = E / 2;
    float *x = work + mlp_step_workspace(dims), *enc = x + K * B * D, *c_skip = enc + K * B * E, *c_out = c_skip + K * B,
          *c_in = c_out + K * B, *weight = c_in + K * B, *rows = weight + K * B;
    const float sd = (float)sigma_data, sd2 = (float)(sigma_data * sigma_data);
    for (int64_t r = 0; r < K * B; r++) {
        const float s = sigma[r];
        float c_noise;
        if (kind == 0) {
            const float s2 = s * s + sd2, root = sqrtf(s2);
            c_skip[r] = sd2 / s2;
            c_out[r] = s * sd / root;
            c_in[r] = 1.0f / root;
            weight[r] = s2 / ((s * sd) * (s * sd));
            c_noise = 250.0f * logf(s);
        } else {
            c_skip[r] = 1.0f;
            c_out[r] = -s;
            c_in[r] = 1.0f / sqrtf(1.0f + s * s);
            weight[r] = 1.0f / (s * s);
            c_noise = sigma_to_t(s, log_sigmas, num_t);
        }
        rows[r] = rowscale ? rowscale[r] : 1.0f / (float)B;
        for (int64_t d = 0; d < D; d++) x[r * D + d] = x0[r * D + d] + s * noise[r * D + d];
        const float *f = freqs + (r / B) * half;
        for (int64_t j = 0; j < half; j++) {
            const float arg = c_noise * f[j];
            enc[r * E + j] = cosf(arg);
            enc[r * E + half + j] = sinf(arg);
        }
    }
    mlp_step(dims, params, grads, x0, x, enc, c_skip, c_out, c_in, weight, rows, losses, work);
}

/* ---------------------------------------------------------------- Adam */

/* One Adam step over `count` tensors of numel[i] floats each (torch.optim.Adam's update, as its fused CPU
 * kernel computes it, non-amsgrad): g += weight_decay p; m = m + (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2;
 * p -= step_size m / (sqrt(v) / bias_correction2_sqrt + eps). The step's scalars come from the caller (in double).
 * The divider (two divisions and a square root per 8 floats) bounds it; once (float) bias_correction2_sqrt is 1
 * (beta2 0.999: from step 16,628 on), sqrt(v) / 1 is sqrt(v) exactly and that division is skipped. */
void adam_update(int64_t count, float *const *p, const float *const *g, float *const *m, float *const *v,
                 const int64_t *numel, double beta1, double beta2, double eps, double weight_decay, double step_size,
                 double bias_correction2_sqrt) {
    const __m256 b1 = _mm256_set1_ps((float)(1.0 - beta1)), b2 = _mm256_set1_ps((float)beta2),
                 c2 = _mm256_set1_ps((float)(1.0 - beta2)), e = _mm256_set1_ps((float)eps),
                 wd = _mm256_set1_ps((float)weight_decay), ss = _mm256_set1_ps((float)step_size),
                 bc = _mm256_set1_ps((float)bias_correction2_sqrt);
    const int decay = weight_decay != 0.0, unit_bc = (float)bias_correction2_sqrt == 1.0f;
    for (int64_t t = 0; t < count; t++) {
        float *pt = p[t], *mt = m[t], *vt = v[t];
        const float *gt = g[t];
        int64_t i = 0;
        for (; i + 8 <= numel[t]; i += 8) {
            __m256 pv = _mm256_loadu_ps(pt + i), gv = _mm256_loadu_ps(gt + i);
            if (decay) gv = _mm256_fmadd_ps(pv, wd, gv);
            __m256 mv = _mm256_loadu_ps(mt + i), vv = _mm256_loadu_ps(vt + i);
            mv = _mm256_fmadd_ps(b1, _mm256_sub_ps(gv, mv), mv);
            vv = _mm256_fmadd_ps(_mm256_mul_ps(gv, gv), c2, _mm256_mul_ps(vv, b2));
            __m256 root = _mm256_sqrt_ps(vv);
            if (!unit_bc) root = _mm256_div_ps(root, bc);
            __m256 denom = _mm256_add_ps(root, e);
            pv = _mm256_sub_ps(pv, _mm256_mul_ps(ss, _mm256_div_ps(mv, denom)));
            _mm256_storeu_ps(mt + i, mv);
            _mm256_storeu_ps(vt + i, vv);
            _mm256_storeu_ps(pt + i, pv);
        }
        for (; i < numel[t]; i++) {
            float gs = gt[i];
            if (decay) gs += pt[i] * (float)weight_decay;
            mt[i] = mt[i] + (float)(1.0 - beta1) * (gs - mt[i]);
            vt[i] = vt[i] * (float)beta2 + gs * gs * (float)(1.0 - beta2);
            pt[i] -= (float)step_size * (mt[i] / (sqrtf(vt[i]) / (float)bias_correction2_sqrt + (float)eps));
        }
    }
}

/* ---------------------------------------------------------------- consecutive steps */

/* Floats of scratch mlp_train_steps needs: mlp_step_precond's, plus one batch of clean rows [B, D]. */
int64_t mlp_train_steps_workspace(const int64_t *dims) {
    return mlp_step_precond_workspace(dims) + dims[DIM_B] * dims[DIM_D];
}

/* `steps` consecutive training steps of one member (dims k = 1), each exactly what one mlp_step_precond call
 * and one adam_update call make of it, so the numbers are those of the calls made one step at a time:
 * step s takes the rows idx[s B .. s B + B - 1] of the data x [n, D] as its batch (idx NULL: the rows 0 ..
 * B - 1, the full set), sigma [steps, B], its noise at noise + s noise_stride ([B, D] each), writes its loss to
 * losses[s] and updates params and the moments exp_avg, exp_avg_sq with step_size[s] and
 * bias_correction2_sqrt[s]. The other arguments are mlp_step_precond's and adam_update's; `work` holds
 * mlp_train_steps_workspace(dims) floats. */
void mlp_train_steps(const int64_t *dims, float *const *params, float *const *grads, float *const *exp_avg,
                     float *const *exp_avg_sq, const float *x, const int64_t *idx, const float *sigma,
                     const float *noise, int64_t noise_stride, const float *freqs, int64_t kind, double sigma_data,
                     const double *log_sigmas, int64_t num_t, double beta1, double beta2, double eps,
                     double weight_decay, const double *step_size, const double *bias_correction2_sqrt,
                     int64_t steps, float *losses, float *work) {
    const int64_t B = dims[DIM_B], D = dims[DIM_D], np = param_count(dims);
    int64_t numel[6 + 8 * 64 + 4];
    param_sizes(dims, numel);  /* one member: each tensor's size */
    float *x0 = work + mlp_step_precond_workspace(dims);
    for (int64_t s = 0; s < steps; s++) {
        const float *rows = x;
        if (idx) {
            const int64_t *ix = idx + s * B;
            for (int64_t b = 0; b < B; b++) memcpy(x0 + b * D, x + ix[b] * D, sizeof(float) * (size_t)D);
            rows = x0;
        }
        mlp_step_precond(dims, (const float *const *)params, grads, rows, sigma + s * B, noise + s * noise_stride,
                         freqs, kind, sigma_data, log_sigmas, num_t, NULL, losses + s, work);
        adam_update(np, params, (const float *const *)grads, exp_avg, exp_avg_sq, numel, beta1, beta2, eps,
                    weight_decay, step_size[s], bias_correction2_sqrt[s]);
    }
}
