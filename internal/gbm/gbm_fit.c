/*
 * gbm_fit: training, for the classifier (softmax, K stumps per round) and
 * the magnitude models (squared error, one stump per round).  The formulas
 * are in gbm.c; this file is about doing them fast and reproducibly.
 *
 * One round is two parallel phases over a small thread pool:
 *
 *  1. Rows, in blocks of GBM_BLOCK.  Eight rows at a time (sixteen with
 *     AVX-512): add the stumps of the previous round to the margins
 *     (through one lookup table per feature those stumps split on, all
 *     classes in one vector), transpose so that the lanes hold rows and
 *     there is one vector per class, take the softmax with a polynomial exp,
 *     accumulate the loss, quantize the gradients and hessians, and
 *     transpose back to one 64-byte (g, h) row of all classes per row.  Then,
 *     still in L1, add the block's rows into the thread's histograms feature
 *     by feature: one vector add per row and feature.  Validation rows get
 *     the margin update and the loss only.
 *  2. Features: sum the threads' histograms, dequantize, and find the best
 *     split of every class on the feature (gbm_split_find).
 *
 * The main thread then picks, per class, the best feature (first in feature
 * order on ties), makes the stumps and the lookup tables for the next round.
 * The loss of the model after t rounds comes out of phase 1 of round t, so
 * early stopping looks one round behind and a last pass computes only it.
 *
 * Determinism.  The model must not depend on the number of threads, so
 * nothing order-dependent touches floats across rows: per-row float math is
 * the same whichever thread (and whichever of the SSE, AVX2 and AVX-512
 * versions) runs it, since ISO C mode contracts no multiply-add and nothing
 * is reassociated; histogram sums are integer sums; and losses are summed
 * per fixed block, then over blocks in order.
 *
 * Quantization.  g and h are scaled by fixed per-fit factors, classifier
 * g by 2^14 / w_max and h by 2^15 / w_max (|g| <= w, h <= w / 2), the
 * squared loss g by 2^14 / (2 max |y - base| w) (half the range kept as
 * headroom; residuals beyond it saturate) and h by 2^14 / w_max, and
 * rounded to the nearest integer after adding a dither in [-1/2, 1/2): a
 * seeded 32-bit value per row plus a per-round offset, wrapping around, so
 * the dither is uniform over the rows of a bin and the rounding unbiased.
 * (XGBoost's floor of 1e-16 on h is far below one quantization step and is
 * left out.)  Rows are summed into int32 histograms, which are flushed into
 * int64 ones before they can overflow: every quantized value is at most
 * 2^14 + 1 in magnitude, so 131000 rows fit.
 */
#include "gbm/gbm_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* The vector helpers are static and inlined, so no vector ever crosses a
 * call boundary whose ABI could differ between the AVX2 and default clones. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8sf __attribute__((vector_size(32)));
typedef int32_t v8si __attribute__((vector_size(32)));
typedef uint32_t v8su __attribute__((vector_size(32)));
typedef double v8df __attribute__((vector_size(64)));
typedef float v16sf __attribute__((vector_size(64)));
/* may_alias: a 16-lane row also reads and writes pairs of v8si */
typedef int32_t v16si __attribute__((vector_size(64), may_alias));
typedef uint32_t v16su __attribute__((vector_size(64)));

#define GBM_BLOCK      256    /* rows; a block's gradients and a feature's histogram fit in L1 */
#define GBM_FLUSH_ROWS 131000 /* rows per int32 histogram: 131000 (2^14 + 1) < 2^31 */
#define GBM_CHUNK      4      /* blocks a thread takes at a time */
#define SLOTS          256    /* histogram slots per feature: bins 0..254 and missing */
/* -log(GBM_PROB_MIN), the clipped log loss of one row */
#define LOSS_MAX 34.538776394910684f

/* The hot loops get an AVX2 clone (and the softmax an AVX-512 version);
 * results are the same bits in every version. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GBM_X86_GCC 1
#define HOT         __attribute__((target_clones("avx2", "default")))
#else
#define GBM_X86_GCC 0
#define HOT
#endif
#define INLINE   static inline __attribute__((always_inline))
#define SPLAT(x) ((v8sf){(x), (x), (x), (x), (x), (x), (x), (x)})

/* ---- fast math ---------------------------------------------------------- */

/*
 * The same element-wise functions for 8-lane (AVX2 or SSE) and 16-lane
 * (AVX-512) vectors, from one text, so that both give the same bits:
 *
 * vexp: e^x for x in [-87, 0] (smaller x is clamped): x = n ln2 + r with
 * |r| <= ln2/2, e^r by its degree-6 Taylor polynomial, 2^n through the
 * exponent bits.
 * vlog: log x for normal x > 0: x = 2^e m with m in (sqrt(1/2), sqrt(2)],
 * log m by the series 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.172.
 * vround: round to nearest (even) integer, for |x| < 2^22.
 */
/* In the kernels GCC cannot see that every class vector read (k < KC <= 8
 * NV) was written; the region between push and pop is exempt. */
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define DEFINE_VMATH(S, VF, VI)                                                                    \
    INLINE VF vsel##S(VI mask, VF a, VF b)                                                         \
    {                                                                                              \
        return (VF)((mask & (VI)a) | (~mask & (VI)b));                                             \
    }                                                                                              \
    INLINE VF vexp##S(VF x)                                                                        \
    {                                                                                              \
        const VF lo = (VF){0} - 87.0f;                                                             \
        x = vsel##S(x < lo, lo, x);                                                                \
        VF t = x * 1.44269504088896341f;                                                           \
        VF n = (t + 12582912.0f) - 12582912.0f;                                                    \
        VF r = x - n * 0.693359375f;                                                               \
        r = r - n * -2.12194440e-4f;                                                               \
        VF p = (VF){0} + 1.0f / 720.0f;                                                            \
        p = p * r + 1.0f / 120.0f;                                                                 \
        p = p * r + 1.0f / 24.0f;                                                                  \
        p = p * r + 1.0f / 6.0f;                                                                   \
        p = p * r + 0.5f;                                                                          \
        p = p * r + 1.0f;                                                                          \
        p = p * r + 1.0f;                                                                          \
        VI ni = __builtin_convertvector(n, VI);                                                    \
        VF scale = (VF)((ni + 127) << 23);                                                         \
        return p * scale;                                                                          \
    }                                                                                              \
    INLINE VF vlog##S(VF x)                                                                        \
    {                                                                                              \
        VI bits = (VI)x;                                                                           \
        VI e = ((bits >> 23) & 0xff) - 127;                                                        \
        VF m = (VF)((bits & 0x7fffff) | 0x3f800000);                                               \
        VI big = m > 1.41421356f;                                                                  \
        m = vsel##S(big, m * 0.5f, m);                                                             \
        e = e - big;                                                                               \
        VF s = (m - 1.0f) / (m + 1.0f), s2 = s * s;                                                \
        VF p = (VF){0} + 1.0f / 9.0f;                                                              \
        p = p * s2 + 1.0f / 7.0f;                                                                  \
        p = p * s2 + 1.0f / 5.0f;                                                                  \
        p = p * s2 + 1.0f / 3.0f;                                                                  \
        p = p * s2 + 1.0f;                                                                         \
        return 2.0f * s * p + __builtin_convertvector(e, VF) * 0.693147180559945f;                 \
    }                                                                                              \
    INLINE VI vround##S(VF x)                                                                      \
    {                                                                                              \
        VF y = x + 12582912.0f;                                                                    \
        return (VI)y - 0x4b400000;                                                                 \
    }                                                                                              \
    /* a[0] = max (or sum) of a[0..n) by a pairwise tree: short dependency                         \
     * chains, and a fixed order of operations. */                                                 \
    INLINE VF tree_max##S(VF *a, const size_t n) /* NOLINT(bugprone-macro-parentheses) */          \
    {                                                                                              \
        _Pragma("GCC unroll 8") for (size_t step = 1; step < n; step *= 2)                         \
        {                                                                                          \
            _Pragma("GCC unroll 8") for (size_t k = 0; k + step < n; k += 2 * step) a[k] =         \
                vsel##S(a[k + step] > a[k], a[k + step], a[k]);                                    \
        }                                                                                          \
        return a[0];                                                                               \
    }                                                                                              \
    INLINE VF tree_sum##S(VF *a, const size_t n) /* NOLINT(bugprone-macro-parentheses) */          \
    {                                                                                              \
        _Pragma("GCC unroll 8") for (size_t step = 1; step < n; step *= 2)                         \
        {                                                                                          \
            _Pragma("GCC unroll 8") for (size_t k = 0; k + step < n; k += 2 * step) a[k] +=        \
                a[k + step];                                                                       \
        }                                                                                          \
        return a[0];                                                                               \
    }

DEFINE_VMATH(, v8sf, v8si)
#if GBM_X86_GCC
DEFINE_VMATH(16, v16sf, v16si)
#endif

bool gbm_allow_avx512 = true;

float gbm_fast_expf(float x)
{
    return vexp(SPLAT(x))[0];
}

float gbm_fast_logf(float x)
{
    return vlog(SPLAT(x))[0];
}

/* Eight vectors as the rows of an 8x8 matrix, transposed in place. */
INLINE void transpose8(v8sf *r)
{
#define LO(x, y) __builtin_shufflevector(x, y, 0, 8, 1, 9, 4, 12, 5, 13)
#define HI(x, y) __builtin_shufflevector(x, y, 2, 10, 3, 11, 6, 14, 7, 15)
#define EV(x, y) __builtin_shufflevector(x, y, 0, 1, 8, 9, 4, 5, 12, 13)
#define OD(x, y) __builtin_shufflevector(x, y, 2, 3, 10, 11, 6, 7, 14, 15)
#define H0(x, y) __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11)
#define H1(x, y) __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15)
    v8sf t0 = LO(r[0], r[1]), t1 = HI(r[0], r[1]), t2 = LO(r[2], r[3]), t3 = HI(r[2], r[3]);
    v8sf t4 = LO(r[4], r[5]), t5 = HI(r[4], r[5]), t6 = LO(r[6], r[7]), t7 = HI(r[6], r[7]);
    v8sf s0 = EV(t0, t2), s1 = OD(t0, t2), s2 = EV(t1, t3), s3 = OD(t1, t3);
    v8sf s4 = EV(t4, t6), s5 = OD(t4, t6), s6 = EV(t5, t7), s7 = OD(t5, t7);
    r[0] = H0(s0, s4);
    r[1] = H0(s1, s5);
    r[2] = H0(s2, s6);
    r[3] = H0(s3, s7);
    r[4] = H1(s0, s4);
    r[5] = H1(s1, s5);
    r[6] = H1(s2, s6);
    r[7] = H1(s3, s7);
#undef LO
#undef HI
#undef EV
#undef OD
#undef H0
#undef H1
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* ---- thread pool -------------------------------------------------------- */

struct fit;
typedef void (*job_fn)(struct fit *ft, unsigned tid);

/*
 * Workers spin for a while before they sleep on the condition variable (and
 * the caller likewise when it waits for them): a round has two short
 * phases, and waking a sleeping thread costs more than one of them takes
 * on small data.
 */
#define SPIN_ITERS 4000

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    unsigned n; /* participants, the calling thread included */
    atomic_uint gen, pending;
    atomic_bool quit;
    job_fn job;
    struct fit *ft;
    pthread_t tids[GBM_MAX_THREADS];
    bool inited;
};

struct worker_arg {
    struct pool *pool;
    unsigned tid;
};

static void cpu_relax(void)
{
#if GBM_X86_GCC
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *p)
{
    struct worker_arg *wa = p;
    struct pool *pl = wa->pool;
    unsigned tid = wa->tid, seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_ITERS; i++) {
            if (atomic_load_explicit(&pl->gen, memory_order_acquire) != seen ||
                atomic_load_explicit(&pl->quit, memory_order_acquire))
                break;
            cpu_relax();
        }
        pthread_mutex_lock(&pl->mu);
        while (atomic_load(&pl->gen) == seen && !atomic_load(&pl->quit))
            pthread_cond_wait(&pl->start, &pl->mu);
        pthread_mutex_unlock(&pl->mu);
        if (atomic_load(&pl->quit))
            break;
        seen = atomic_load(&pl->gen);
        pl->job(pl->ft, tid);
        if (atomic_fetch_sub_explicit(&pl->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pl->mu);
            pthread_cond_signal(&pl->done);
            pthread_mutex_unlock(&pl->mu);
        }
    }
    return NULL;
}

/* ---- the fit ------------------------------------------------------------ */

struct thread_state {
    void *h32_raw, *h64_raw, *gq_raw, *scratch_raw;
    v8si *h32;      /* [F][SLOTS][2 NV] */
    int64_t *h64;   /* [F][SLOTS][2 L] */
    v8si *gq;       /* [GBM_BLOCK][2 NV] */
    double *gh;     /* phase 2: [K][2][n_bins + 1] */
    int64_t *tot;   /* phase 2: [SLOTS][2 L] */
    size_t in_h32;  /* rows in h32 since the last flush */
    bool h32_dirty; /* h32 holds rows */
    bool h64_live;  /* h64 holds this round's rows */
};

/* Laid out by topic rather than by size; the padding does not matter. */
struct fit { /* NOLINT(clang-analyzer-optin.performance.Padding) */
    enum gbm_objective obj;
    size_t K, NV, L; /* values, vectors and lanes per half row */
    size_t F;
    const struct gbm_data *tr, *va;
    const struct gbm_feature *feat;
    const struct gbm_params *p;
    float sg, sh;          /* quantization scales */
    double inv_sg, inv_sh; /* and their inverses */
    double wsum_tr, wsum_va;
    size_t nb_tr, nb_va; /* blocks */
    void *marg_tr_raw, *marg_va_raw;
    v8sf *marg_tr, *marg_va; /* [n][NV] */
    uint32_t *u;             /* dither per training row */
    double *loss_tr, *loss_va;
    double *mass; /* [F][GBM_MAX_BINS + 1] */
    size_t *bad_row;
    unsigned n_threads;
    struct thread_state *ts;
    struct pool pool;
    /* the previous round's stumps, as lookup tables */
    size_t n_upd;
    int32_t *upd_feat; /* [K] */
    void *upd_raw;
    v8sf *upd_lut; /* [K][SLOTS][NV] */
    v8sf cadd[GBM_MAX_CLASSES / 8];
    /* this round */
    bool do_grad;
    uint32_t cd;                  /* dither offset of the round */
    v8sf padc[GBM_MAX_CLASSES];   /* -1e30 for the padding classes past K */
    float cmask[GBM_MAX_CLASSES]; /* 0 for them, else 1 */
    bool avx512;                  /* use the 16-row softmax */
    atomic_size_t next_block;     /* phase 1\'s work queue */
    /* the final evaluation, in double precision */
    const struct gbm_model *ev_m;
    const struct gbm_booster *ev_b;
    double train_loss_best;  /* from phase 1, at the best round */
    double *ev_va;           /* [blocks][3] */
    struct gbm_split *cand;  /* [F][K] */
    double *root_g, *root_h; /* [K] */
};

static void *alloc_aligned(size_t n, void **raw)
{
    *raw = util_malloc(n + 64);
    if (!*raw)
        return NULL;
    char *p = *raw;
    return p + ((64 - ((uintptr_t)p & 63)) & 63);
}

static void run(struct fit *ft, job_fn job)
{
    struct pool *pl = &ft->pool;
    if (pl->n <= 1) {
        job(ft, 0);
        return;
    }
    pl->job = job;
    atomic_store(&pl->pending, pl->n - 1);
    pthread_mutex_lock(&pl->mu);
    atomic_fetch_add(&pl->gen, 1);
    pthread_cond_broadcast(&pl->start);
    pthread_mutex_unlock(&pl->mu);
    job(ft, 0);
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&pl->pending, memory_order_acquire) == 0)
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&pl->mu);
    while (atomic_load(&pl->pending) > 0)
        pthread_cond_wait(&pl->done, &pl->mu);
    pthread_mutex_unlock(&pl->mu);
}

/*
 * Starts up to want - 1 workers.  A thread that cannot be started only
 * means fewer threads: the result does not depend on their number.
 */
static void pool_start(struct fit *ft, unsigned want, struct worker_arg *args)
{
    struct pool *pl = &ft->pool;
    pl->n = 1;
    pl->ft = ft;
    if (want <= 1)
        return;
    if (pthread_mutex_init(&pl->mu, NULL) != 0)
        return;
    if (pthread_cond_init(&pl->start, NULL) != 0) {
        pthread_mutex_destroy(&pl->mu);
        return;
    }
    if (pthread_cond_init(&pl->done, NULL) != 0) {
        pthread_cond_destroy(&pl->start);
        pthread_mutex_destroy(&pl->mu);
        return;
    }
    pl->inited = true;
    for (unsigned i = 1; i < want; i++) {
        args[i].pool = pl;
        args[i].tid = i;
        if (pthread_create(&pl->tids[i], NULL, worker_main, &args[i]) != 0)
            break;
        pl->n++;
    }
}

static void pool_stop(struct fit *ft)
{
    struct pool *pl = &ft->pool;
    if (!pl->inited)
        return;
    pthread_mutex_lock(&pl->mu);
    atomic_store(&pl->quit, true);
    pthread_cond_broadcast(&pl->start);
    pthread_mutex_unlock(&pl->mu);
    for (unsigned i = 1; i < pl->n; i++)
        pthread_join(pl->tids[i], NULL);
    pthread_cond_destroy(&pl->done);
    pthread_cond_destroy(&pl->start);
    pthread_mutex_destroy(&pl->mu);
    pl->inited = false;
    pl->n = 1;
}

/* ---- phase 1: rows ------------------------------------------------------ */

INLINE void softmax8(const struct fit *ft, const uint8_t *const *ub, size_t i, const int32_t *lab,
                     const float *wt, const uint32_t *ud, v8sf *marg, bool grad, v8si *gq,
                     v8df *lacc, const size_t NV, const size_t KC, const bool padded)
{
    v8sf C[GBM_MAX_CLASSES], E[GBM_MAX_CLASSES], T[GBM_MAX_CLASSES];
    for (size_t v = 0; v < NV; v++) {
        v8sf R[8];
#pragma GCC unroll 8
        for (size_t r = 0; r < 8; r++)
            R[r] = marg[(i + r) * NV + v] + ft->cadd[v];
        for (size_t j = 0; j < ft->n_upd; j++) {
            const uint8_t *bj = ub[j] + i;
            const v8sf *lj = ft->upd_lut + (size_t)j * SLOTS * NV + v;
#pragma GCC unroll 8
            for (size_t r = 0; r < 8; r++)
                R[r] += lj[(size_t)bj[r] * NV];
        }
#pragma GCC unroll 8
        for (size_t r = 0; r < 8; r++)
            marg[(i + r) * NV + v] = R[r];
        transpose8(R);
#pragma GCC unroll 8
        for (size_t c = 0; c < 8; c++)
            C[v * 8 + c] = padded ? R[c] + ft->padc[v * 8 + c] : R[c];
    }
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++) {
        /* NV >= 1, so the loop above wrote C[0..8 NV) */
        /* cppcheck-suppress uninitvar */
        T[k] = C[k];
    }
    v8sf mx = tree_max(T, KC);
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++) {
        E[k] = vexp(C[k] - mx);
        if (padded)
            E[k] *= ft->cmask[k];
        T[k] = E[k];
    }
    v8sf s = tree_sum(T, KC);
    v8si y;
    memcpy(&y, lab + i, sizeof y);
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++)
        T[k] = (v8sf)((v8si)C[k] & (y == (int32_t)k));
    v8sf my = tree_sum(T, KC);
    v8sf ly = vlog(s) - (my - mx);
    ly = vsel(ly < LOSS_MAX, ly, SPLAT(LOSS_MAX));
    v8sf w = SPLAT(1.0f);
    if (wt)
        memcpy(&w, wt + i, sizeof w);
    *lacc += __builtin_convertvector(ly * w, v8df);
    if (!grad)
        return;
    v8sf rs = 1.0f / s, wg = w * ft->sg, wh = (w + w) * ft->sh;
    v8su u;
    memcpy(&u, ud + i, sizeof u);
    /* One dither per row and round, shared by its classes: each q is still
     * unbiased, which is all the histogram sums need. */
    v8sf d = __builtin_convertvector((v8si)(u + ft->cd), v8sf) * 0x1p-32f;
    const v8si one = (v8si)SPLAT(1.0f);
    for (size_t v = 0; v < NV; v++) {
        v8sf QG[8], QH[8];
#pragma GCC unroll 8
        for (size_t c = 0; c < 8; c++) {
            size_t k = v * 8 + c;
            if (k >= KC) {
                QG[c] = QH[c] = SPLAT(0.0f);
                continue;
            }
            v8sf p = E[k] * rs;
            v8sf yk = (v8sf)((y == (int32_t)k) & one);
            QG[c] = (v8sf)vround((p - yk) * wg + d);
            QH[c] = (v8sf)vround(p * (1.0f - p) * wh + d);
        }
        transpose8(QG);
        transpose8(QH);
#pragma GCC unroll 8
        for (size_t r = 0; r < 8; r++) {
            gq[(i + r) * 2 * NV + v] = (v8si)QG[r];
            gq[(i + r) * 2 * NV + NV + v] = (v8si)QH[r];
        }
    }
}

#if GBM_X86_GCC
/*
 * The 16x8 transpose of the AVX-512 path: Z[j] holds rows 2j and 2j + 1
 * (eight classes each); C[k] gets class k of the sixteen rows.  Fed with
 * eight 16-row class vectors instead, it returns C[k] with row k in the
 * even lanes and row k + 8 in the odd ones (classes in order).
 */
INLINE void tr16x8(const v16sf *Z, v16sf *C)
{
    v16sf A[8], B[8];
#pragma GCC unroll 4
    for (size_t p = 0; p < 4; p++) {
        A[2 * p] = __builtin_shufflevector(Z[2 * p], Z[2 * p + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17,
                                           18, 19, 24, 25, 26, 27);
        A[2 * p + 1] = __builtin_shufflevector(Z[2 * p], Z[2 * p + 1], 4, 5, 6, 7, 12, 13, 14, 15,
                                               20, 21, 22, 23, 28, 29, 30, 31);
    }
#pragma GCC unroll 4
    for (size_t hq = 0; hq < 4; hq++) {
        size_t h = hq / 2, q = hq % 2;
        v16sf X = A[4 * h + q], Y = A[4 * h + 2 + q];
        B[4 * h + 2 * q] =
            __builtin_shufflevector(X, Y, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
        B[4 * h + 2 * q + 1] = __builtin_shufflevector(X, Y, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22,
                                                       23, 26, 27, 30, 31);
    }
#pragma GCC unroll 4
    for (size_t t = 0; t < 4; t++) {
        C[2 * t] = __builtin_shufflevector(B[t], B[4 + t], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20,
                                           22, 24, 26, 28, 30);
        C[2 * t + 1] = __builtin_shufflevector(B[t], B[4 + t], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19,
                                               21, 23, 25, 27, 29, 31);
    }
}

/*
 * Sixteen rows at once with AVX-512: softmax8 with NV = 1, operation for
 * operation, so the results are the same bits; the loss goes into lacc as
 * two groups of eight, in row order.
 */
INLINE void softmax16(const struct fit *ft, const uint8_t *const *ub, size_t i, const int32_t *lab,
                      const float *wt, const uint32_t *ud, v8sf *marg, bool grad, v8si *gq,
                      v8df *lacc, const size_t KC, const bool padded)
{
    v8sf R[16];
    v16sf Z[8], C[8], E[8], T[8];
#pragma GCC unroll 16
    for (size_t r = 0; r < 16; r++)
        R[r] = marg[i + r] + ft->cadd[0];
    for (size_t j = 0; j < ft->n_upd; j++) {
        const uint8_t *bj = ub[j] + i;
        const v8sf *lj = ft->upd_lut + (size_t)j * SLOTS;
#pragma GCC unroll 16
        for (size_t r = 0; r < 16; r++)
            R[r] += lj[bj[r]];
    }
#pragma GCC unroll 8
    for (size_t j = 0; j < 8; j++) {
        marg[i + 2 * j] = R[2 * j];
        marg[i + 2 * j + 1] = R[2 * j + 1];
        Z[j] = __builtin_shufflevector(R[2 * j], R[2 * j + 1], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                       12, 13, 14, 15);
    }
    tr16x8(Z, C);
#pragma GCC unroll 8
    for (size_t k = 0; k < 8; k++) {
        if (padded)
            C[k] += ft->padc[k][0];
    }
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++)
        T[k] = C[k];
    v16sf mx = tree_max16(T, KC);
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++) {
        E[k] = vexp16(C[k] - mx);
        if (padded)
            E[k] *= ft->cmask[k];
        T[k] = E[k];
    }
    v16sf s = tree_sum16(T, KC);
    v16si y;
    memcpy(&y, lab + i, sizeof y);
#pragma GCC unroll 8
    for (size_t k = 0; k < KC; k++)
        T[k] = (v16sf)((v16si)C[k] & (y == (int32_t)k));
    v16sf my = tree_sum16(T, KC);
    v16sf ly = vlog16(s) - (my - mx);
    ly = vsel16(ly < LOSS_MAX, ly, (v16sf){0} + LOSS_MAX);
    v16sf w = (v16sf){0} + 1.0f;
    if (wt)
        memcpy(&w, wt + i, sizeof w);
    v16sf lw = ly * w;
    *lacc += __builtin_convertvector(__builtin_shufflevector(lw, lw, 0, 1, 2, 3, 4, 5, 6, 7), v8df);
    *lacc += __builtin_convertvector(__builtin_shufflevector(lw, lw, 8, 9, 10, 11, 12, 13, 14, 15),
                                     v8df);
    if (!grad)
        return;
    v16sf rs = 1.0f / s, wg = w * ft->sg, wh = (w + w) * ft->sh;
    v16su u;
    memcpy(&u, ud + i, sizeof u);
    v16sf d = __builtin_convertvector((v16si)(u + ft->cd), v16sf) * 0x1p-32f;
    const v16si one = (v16si)((v16sf){0} + 1.0f);
    v16sf G[8], H[8], GT[8], HT[8];
#pragma GCC unroll 8
    for (size_t k = 0; k < 8; k++) {
        if (k >= KC) {
            G[k] = H[k] = (v16sf){0};
            continue;
        }
        v16sf p = E[k] * rs;
        v16sf yk = (v16sf)((y == (int32_t)k) & one);
        G[k] = (v16sf)vround16((p - yk) * wg + d);
        H[k] = (v16sf)vround16(p * (1.0f - p) * wh + d);
    }
    tr16x8(G, GT);
    tr16x8(H, HT);
#pragma GCC unroll 8
    for (size_t k = 0; k < 8; k++) {
        *(v16si *)(gq + 2 * (i + k)) = (v16si)__builtin_shufflevector(
            GT[k], HT[k], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        *(v16si *)(gq + 2 * (i + 8 + k)) = (v16si)__builtin_shufflevector(
            GT[k], HT[k], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    }
}
#endif

#pragma GCC diagnostic pop

/*
 * Rows [r0, r0 + n) of d: softmax8 over the groups of eight, the last
 * partial group through padded copies (padding weighs 0).  Returns the
 * weighted loss; gq gets the rows' gradients from index 0.
 */
INLINE double softmax_rows(const struct fit *ft, const struct gbm_data *d, v8sf *marg,
                           const uint32_t *ud, size_t r0, size_t n, bool grad, v8si *gq,
                           const size_t NV, const size_t KC, const bool padded, const bool use16)
{
    const uint8_t *ub[GBM_MAX_CLASSES];
    for (size_t j = 0; j < ft->n_upd; j++)
        ub[j] = d->bins[ft->upd_feat[j]] + r0;
    const float *wt = d->weight ? d->weight + r0 : NULL;
    const int32_t *lab = d->label + r0;
    const uint32_t *u = grad ? ud + r0 : NULL;
    v8sf *mg = marg + r0 * NV;
    v8df lacc = {0};
    size_t i = 0;
#if GBM_X86_GCC
    if (use16) {
        for (; i + 16 <= n; i += 16)
            softmax16(ft, ub, i, lab, wt, u, mg, grad, gq, &lacc, KC, padded);
    }
#else
    (void)use16;
#endif
    for (; i + 8 <= n; i += 8)
        softmax8(ft, ub, i, lab, wt, u, mg, grad, gq, &lacc, NV, KC, padded);
    if (i < n) {
        uint8_t lb[GBM_MAX_CLASSES][8];
        const uint8_t *lub[GBM_MAX_CLASSES];
        int32_t llab[8];
        float lwt[8];
        uint32_t lu[8];
        v8sf lmarg[8 * GBM_MAX_CLASSES / 8];
        v8si lgq[8 * 2 * GBM_MAX_CLASSES / 8];
        size_t rem = n - i;
        for (size_t r = 0; r < 8; r++) {
            for (size_t j = 0; j < ft->n_upd; j++)
                lb[j][r] = r < rem ? ub[j][i + r] : 0;
            llab[r] = r < rem ? lab[i + r] : 0;
            lwt[r] = r < rem ? (wt ? wt[i + r] : 1.0f) : 0.0f;
            lu[r] = r < rem && u ? u[i + r] : 0;
            for (size_t v = 0; v < NV; v++)
                lmarg[r * NV + v] = r < rem ? mg[(i + r) * NV + v] : SPLAT(0.0f);
        }
        for (size_t j = 0; j < ft->n_upd; j++)
            lub[j] = lb[j];
        softmax8(ft, lub, 0, llab, lwt, lu, lmarg, grad, lgq, &lacc, NV, KC, padded);
        for (size_t r = 0; r < rem; r++) {
            for (size_t v = 0; v < NV; v++)
                mg[(i + r) * NV + v] = lmarg[r * NV + v];
            if (grad)
                memcpy(gq + (i + r) * 2 * NV, lgq + r * 2 * NV, 2 * NV * sizeof(v8si));
        }
    }
    double loss = 0.0;
    for (int j = 0; j < 8; j++)
        loss += lacc[j];
    return loss;
}

/* Seven classes (the policy's) get their own unrolled copy. */
HOT static double softmax_rows_7(const struct fit *ft, const struct gbm_data *d, v8sf *marg,
                                 const uint32_t *ud, size_t r0, size_t n, bool grad, v8si *gq)
{
    return softmax_rows(ft, d, marg, ud, r0, n, grad, gq, 1, 7, false, false);
}

HOT static double softmax_rows_1(const struct fit *ft, const struct gbm_data *d, v8sf *marg,
                                 const uint32_t *ud, size_t r0, size_t n, bool grad, v8si *gq)
{
    return softmax_rows(ft, d, marg, ud, r0, n, grad, gq, 1, 8, true, false);
}

#if GBM_X86_GCC
/* The same with sixteen rows per step where AVX-512 is there. */
__attribute__((target("avx512f"))) static double
softmax16_rows_7(const struct fit *ft, const struct gbm_data *d, v8sf *marg, const uint32_t *ud,
                 size_t r0, size_t n, bool grad, v8si *gq)
{
    return softmax_rows(ft, d, marg, ud, r0, n, grad, gq, 1, 7, false, true);
}

__attribute__((target("avx512f"))) static double
softmax16_rows_1(const struct fit *ft, const struct gbm_data *d, v8sf *marg, const uint32_t *ud,
                 size_t r0, size_t n, bool grad, v8si *gq)
{
    return softmax_rows(ft, d, marg, ud, r0, n, grad, gq, 1, 8, true, true);
}
#endif

HOT static double softmax_rows_n(const struct fit *ft, const struct gbm_data *d, v8sf *marg,
                                 const uint32_t *ud, size_t r0, size_t n, bool grad, v8si *gq)
{
    return softmax_rows(ft, d, marg, ud, r0, n, grad, gq, ft->NV, 8 * ft->NV, true, false);
}

/* The same for the squared loss (one value per row, in lane 0). */
static double squared_rows(const struct fit *ft, const struct gbm_data *d, v8sf *marg,
                           const uint32_t *ud, size_t r0, size_t n, bool grad, v8si *gq)
{
    const uint8_t *ub = ft->n_upd ? d->bins[ft->upd_feat[0]] + r0 : NULL;
    const float *wt = d->weight ? d->weight + r0 : NULL;
    double loss = 0.0;
    for (size_t i = 0; i < n; i++) {
        v8sf *mr = &marg[r0 + i];
        float pred = (*mr)[0] + ft->cadd[0][0];
        if (ub)
            pred += ft->upd_lut[ub[i]][0];
        (*mr)[0] = pred;
        float w = wt ? wt[i] : 1.0f;
        float e = pred - d->target[r0 + i];
        loss += (double)(w * e * e);
        if (!grad)
            continue;
        v8sf x = SPLAT(0.0f), dv = SPLAT((float)(int32_t)(ud[r0 + i] + ft->cd) * 0x1p-32f);
        float qg = e * w * ft->sg;
        x[0] = qg > 16384.0f ? 16384.0f : qg < -16384.0f ? -16384.0f : qg; /* saturate */
        x[1] = w * ft->sh;
        v8si q = vround(x + dv);
        v8si a = {q[0], 0, 0, 0, 0, 0, 0, 0}, b = {q[1], 0, 0, 0, 0, 0, 0, 0};
        gq[2 * i] = a;
        gq[2 * i + 1] = b;
    }
    return loss;
}

/* Adds the block's gradient rows into the int32 histograms.  With up to 8
 * classes a row is one 64-byte vector, a single AVX-512 add. */
#if GBM_X86_GCC
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void
hist_rows(const struct fit *ft, v8si *h32, size_t r0, size_t n, const v8si *gq)
{
    const size_t NV = ft->NV;
    for (size_t f = 0; f < ft->F; f++) {
        const uint8_t *b = ft->tr->bins[f] + r0;
        v8si *hf = h32 + f * SLOTS * 2 * NV;
        if (NV == 1) {
            v16si *h16 = (v16si *)hf;
            const v16si *g16 = (const v16si *)gq;
#pragma GCC unroll 4
            for (size_t i = 0; i < n; i++)
                h16[b[i]] += g16[i];
        } else {
            for (size_t i = 0; i < n; i++) {
                v8si *e = hf + (size_t)b[i] * 2 * NV;
                const v8si *g = gq + i * 2 * NV;
                for (size_t v = 0; v < 2 * NV; v++)
                    e[v] += g[v];
            }
        }
    }
}

/* The slots a feature uses: its bins and the missing slot. */
static bool slot_used(const struct gbm_feature *ft, size_t s)
{
    return s < ft->n_bins || s == GBM_MISSING_BIN;
}

/* h64 (+)= h32, then h32 = 0. */
static void flush(const struct fit *ft, struct thread_state *ts)
{
    const size_t NV = ft->NV, L = ft->L;
    for (size_t f = 0; f < ft->F; f++) {
        for (size_t s = 0; s < SLOTS; s++) {
            if (!slot_used(&ft->feat[f], s))
                continue;
            v8si *src = ts->h32 + (f * SLOTS + s) * 2 * NV;
            int64_t *dst = ts->h64 + (f * SLOTS + s) * 2 * L;
            for (size_t v = 0; v < 2 * NV; v++) {
                for (size_t j = 0; j < 8; j++) {
                    if (ts->h64_live)
                        dst[v * 8 + j] += src[v][j];
                    else
                        dst[v * 8 + j] = src[v][j];
                }
                src[v] -= src[v];
            }
        }
    }
    ts->h64_live = true;
    ts->h32_dirty = false;
    ts->in_h32 = 0;
}

static void block_range(size_t nb, unsigned n, unsigned tid, size_t *b0, size_t *b1)
{
    *b0 = nb * tid / n;
    *b1 = nb * (tid + 1) / n;
}

static double rows_of(struct fit *ft, const struct gbm_data *d, v8sf *marg, size_t r0, size_t n,
                      bool grad, v8si *gq)
{
    if (ft->obj == GBM_SQUARED)
        return squared_rows(ft, d, marg, ft->u, r0, n, grad, gq);
#if GBM_X86_GCC
    if (ft->avx512 && ft->K == 7)
        return softmax16_rows_7(ft, d, marg, ft->u, r0, n, grad, gq);
    if (ft->avx512 && ft->NV == 1)
        return softmax16_rows_1(ft, d, marg, ft->u, r0, n, grad, gq);
#endif
    if (ft->K == 7)
        return softmax_rows_7(ft, d, marg, ft->u, r0, n, grad, gq);
    if (ft->NV == 1)
        return softmax_rows_1(ft, d, marg, ft->u, r0, n, grad, gq);
    return softmax_rows_n(ft, d, marg, ft->u, r0, n, grad, gq);
}

static void phase_rows(struct fit *ft, unsigned tid)
{
    struct thread_state *ts = &ft->ts[tid];
    ts->h64_live = false;
    ts->in_h32 = 0;
    if (ts->h32_dirty) {
        /* Left over from the last round, which phase 2 read from h32. */
        for (size_t f = 0; f < ft->F; f++) {
            for (size_t s = 0; s < SLOTS; s++) {
                if (slot_used(&ft->feat[f], s))
                    memset(ts->h32 + (f * SLOTS + s) * 2 * ft->NV, 0, 2 * ft->NV * sizeof(v8si));
            }
        }
        ts->h32_dirty = false;
    }
    /* Blocks are handed out in chunks as threads ask (training blocks,
     * then validation blocks): which thread does a block changes nothing. */
    const size_t total = ft->nb_tr + ft->nb_va;
    for (;;) {
        size_t c0 = atomic_fetch_add(&ft->next_block, GBM_CHUNK);
        if (c0 >= total)
            break;
        size_t c1 = c0 + GBM_CHUNK < total ? c0 + GBM_CHUNK : total;
        for (size_t bk = c0; bk < c1; bk++) {
            if (bk >= ft->nb_tr) {
                size_t r0 = (bk - ft->nb_tr) * GBM_BLOCK;
                size_t n = ft->va->n_rows - r0 < GBM_BLOCK ? ft->va->n_rows - r0 : GBM_BLOCK;
                ft->loss_va[bk - ft->nb_tr] = rows_of(ft, ft->va, ft->marg_va, r0, n, false, NULL);
                continue;
            }
            size_t r0 = bk * GBM_BLOCK;
            size_t n = ft->tr->n_rows - r0 < GBM_BLOCK ? ft->tr->n_rows - r0 : GBM_BLOCK;
            ft->loss_tr[bk] = rows_of(ft, ft->tr, ft->marg_tr, r0, n, ft->do_grad, ts->gq);
            if (!ft->do_grad)
                continue;
            if (ts->in_h32 + n > GBM_FLUSH_ROWS)
                flush(ft, ts);
            hist_rows(ft, ts->h32, r0, n, ts->gq);
            ts->in_h32 += n;
            ts->h32_dirty = true;
        }
    }
    if (ft->do_grad && ts->h64_live && ts->in_h32 > 0)
        flush(ft, ts);
}

/* ---- phase 2: features -------------------------------------------------- */

static void phase_features(struct fit *ft, unsigned tid)
{
    struct thread_state *ts = &ft->ts[tid];
    const size_t NV = ft->NV, L = ft->L, K = ft->K;
    for (size_t f = tid; f < ft->F; f += ft->pool.n) {
        const struct gbm_feature *fe = &ft->feat[f];
        unsigned nb = fe->n_bins;
        /* Sum the threads' histograms (integers: any order gives the same). */
        for (size_t s = 0; s < SLOTS; s++) {
            if (!slot_used(fe, s))
                continue;
            int64_t *dst = ts->tot + s * 2 * L;
            memset(dst, 0, 2 * L * sizeof *dst);
            for (unsigned t = 0; t < ft->pool.n; t++) {
                const struct thread_state *o = &ft->ts[t];
                if (o->h64_live) {
                    const int64_t *src = o->h64 + (f * SLOTS + s) * 2 * L;
                    for (size_t j = 0; j < 2 * L; j++)
                        dst[j] += src[j];
                } else {
                    const v8si *src = o->h32 + (f * SLOTS + s) * 2 * NV;
                    for (size_t j = 0; j < 2 * L; j++)
                        dst[j] += src[j / 8][j % 8];
                }
            }
        }
        for (size_t k = 0; k < K; k++) {
            double *g = ts->gh + k * 2 * (GBM_MAX_BINS + 1), *h = g + GBM_MAX_BINS + 1;
            for (unsigned b = 0; b <= nb; b++) {
                size_t s = b < nb ? b : GBM_MISSING_BIN;
                g[b] = (double)ts->tot[s * 2 * L + k] * ft->inv_sg;
                h[b] = (double)ts->tot[s * 2 * L + L + k] * ft->inv_sh;
            }
            gbm_split_find(fe->kind, nb, g, h, ft->mass + f * (GBM_MAX_BINS + 1), ft->p->lambda,
                           ft->p->min_child_weight, &ft->cand[f * K + k]);
            if (f == 0) {
                double G = 0.0, H = 0.0;
                for (unsigned b = 0; b <= nb; b++) {
                    G += g[b];
                    H += h[b];
                }
                ft->root_g[k] = G;
                ft->root_h[k] = H;
            }
        }
    }
}

/* ---- the final evaluation ----------------------------------------------- */

static size_t eval_blocks(const struct gbm_data *d)
{
    return d ? (d->n_rows + GBM_EVAL_BLOCK - 1) / GBM_EVAL_BLOCK : 0;
}

static void phase_eval(struct fit *ft, unsigned tid)
{
    const struct gbm_data *d = ft->va;
    size_t b0, b1;
    block_range(eval_blocks(d), ft->pool.n, tid, &b0, &b1);
    for (size_t bk = b0; bk < b1; bk++) {
        size_t r0 = bk * GBM_EVAL_BLOCK;
        size_t r1 = d->n_rows - r0 < GBM_EVAL_BLOCK ? d->n_rows : r0 + GBM_EVAL_BLOCK;
        gbm_booster_eval_rows(ft->ev_m, ft->ev_b, d, r0, r1, ft->ev_va + 3 * bk);
    }
}

/* The losses of b and its validation accuracy; the validation numbers as
 * gbm_booster_evaluate computes them, with the pool's threads. */
static void evaluate(struct fit *ft, const struct gbm_model *m, struct gbm_booster *b)
{
    /* The training loss comes from the rounds' own pass (float margins, a
     * relative error of about 1e-7); only validation is recomputed. */
    b->train_loss = ft->train_loss_best;
    if (!ft->va)
        return;
    ft->ev_m = m;
    ft->ev_b = b;
    run(ft, phase_eval);
    gbm_eval_finish(b, ft->ev_va, eval_blocks(ft->va), &b->valid_loss, &b->valid_accuracy);
    if (b->objective != GBM_SOFTMAX)
        b->valid_accuracy = NAN;
}

/* ---- setup: training distribution and checks ---------------------------- */

static void phase_mass(struct fit *ft, unsigned tid)
{
    for (size_t f = tid; f < ft->F; f += ft->pool.n) {
        const struct gbm_feature *fe = &ft->feat[f];
        double *mass = ft->mass + f * (GBM_MAX_BINS + 1);
        const uint8_t *b = ft->tr->bins[f];
        const float *w = ft->tr->weight;
        size_t bad = SIZE_MAX;
        uint64_t count[SLOTS] = {0};
        for (size_t r = 0; r < ft->tr->n_rows; r++) {
            unsigned v = b[r];
            if (v >= fe->n_bins && v != GBM_MISSING_BIN) {
                bad = r;
                break;
            }
            if (w)
                mass[v < fe->n_bins ? v : fe->n_bins] += w[r];
            else
                count[v]++;
        }
        if (!w) {
            for (unsigned v = 0; v < fe->n_bins; v++)
                mass[v] = (double)count[v];
            mass[fe->n_bins] = (double)count[GBM_MISSING_BIN];
        }
        if (bad == SIZE_MAX && ft->va) {
            b = ft->va->bins[f];
            for (size_t r = 0; r < ft->va->n_rows; r++) {
                if (b[r] >= fe->n_bins && b[r] != GBM_MISSING_BIN) {
                    bad = ft->tr->n_rows + r;
                    break;
                }
            }
        }
        ft->bad_row[f] = bad;
    }
}

static int check_features(const struct gbm_data *d, char *err, size_t errlen)
{
    if (d->n_features < 1 || d->n_features > GBM_MAX_FEATURES || !d->features || !d->bins) {
        util_fmt(err, errlen, "need 1..%d features", GBM_MAX_FEATURES);
        return -1;
    }
    for (size_t f = 0; f < d->n_features; f++) {
        const struct gbm_feature *fe = &d->features[f];
        if (!fe->name || !fe->name[0]) {
            util_fmt(err, errlen, "feature %zu: empty name", f);
            return -1;
        }
        for (size_t g = 0; g < f; g++) {
            if (strcmp(d->features[g].name, fe->name) == 0) {
                util_fmt(err, errlen, "feature %zu: duplicate name \"%s\"", f, fe->name);
                return -1;
            }
        }
        if (!d->bins[f]) {
            util_fmt(err, errlen, "feature %s: no bins", fe->name);
            return -1;
        }
        if (fe->n_bins < 1 || fe->n_bins > GBM_MAX_BINS) {
            util_fmt(err, errlen, "feature %s: n_bins %u not in 1..%d", fe->name, fe->n_bins,
                     GBM_MAX_BINS);
            return -1;
        }
        if (fe->kind == GBM_NUMERIC) {
            if (fe->n_bins > 1 && !fe->cuts) {
                util_fmt(err, errlen, "feature %s: no cuts", fe->name);
                return -1;
            }
            for (unsigned i = 0; i + 1 < fe->n_bins; i++) {
                if (!isfinite(fe->cuts[i]) || (i > 0 && !(fe->cuts[i - 1] < fe->cuts[i]))) {
                    util_fmt(err, errlen, "feature %s: cuts not finite and increasing", fe->name);
                    return -1;
                }
            }
        } else if (fe->kind == GBM_CATEGORICAL) {
            if (fe->n_levels > 0 && (!fe->levels || !fe->level_bin)) {
                util_fmt(err, errlen, "feature %s: no levels", fe->name);
                return -1;
            }
            for (size_t i = 0; i < fe->n_levels; i++) {
                if (!fe->levels[i] || fe->level_bin[i] >= fe->n_bins) {
                    util_fmt(err, errlen, "feature %s: level %zu bad or out of range", fe->name, i);
                    return -1;
                }
                for (size_t j = 0; j < i; j++) {
                    if (strcmp(fe->levels[i], fe->levels[j]) == 0) {
                        util_fmt(err, errlen, "feature %s: duplicate level \"%s\"", fe->name,
                                 fe->levels[i]);
                        return -1;
                    }
                }
            }
        } else {
            util_fmt(err, errlen, "feature %s: unknown kind", fe->name);
            return -1;
        }
    }
    return 0;
}

static int check_params(const struct gbm_params *p, char *err, size_t errlen)
{
    if (!p) {
        util_fmt(err, errlen, "no parameters");
        return -1;
    }
    if (p->rounds < 1 || p->rounds > GBM_MAX_ROUNDS) {
        util_fmt(err, errlen, "rounds must be in 1..%d", GBM_MAX_ROUNDS);
        return -1;
    }
    if (!(p->learning_rate > 0.0 && p->learning_rate <= 1.0)) {
        util_fmt(err, errlen, "learning_rate must be in (0, 1]");
        return -1;
    }
    if (!(p->lambda >= 0.0 && isfinite(p->lambda))) {
        util_fmt(err, errlen, "lambda must be finite and >= 0");
        return -1;
    }
    if (!(p->min_child_weight >= 0.0 && isfinite(p->min_child_weight))) {
        util_fmt(err, errlen, "min_child_weight must be finite and >= 0");
        return -1;
    }
    if (p->threads < 1 || p->threads > GBM_MAX_THREADS) {
        util_fmt(err, errlen, "threads must be in 1..%d", GBM_MAX_THREADS);
        return -1;
    }
    return 0;
}

/* Rows, labels or targets, and weights of one data set. */
static int check_rows(const struct gbm_data *d, enum gbm_objective obj, size_t K, const char *what,
                      double *wsum, float *wmax, char *err, size_t errlen)
{
    if (d->n_rows < 1) {
        util_fmt(err, errlen, "%s: no rows", what);
        return -1;
    }
    if (obj == GBM_SOFTMAX && !d->label) {
        util_fmt(err, errlen, "%s: no labels", what);
        return -1;
    }
    if (obj == GBM_SQUARED && !d->target) {
        util_fmt(err, errlen, "%s: no target", what);
        return -1;
    }
    double s = 0.0;
    float mx = 0.0f;
    for (size_t r = 0; r < d->n_rows; r++) {
        if (obj == GBM_SOFTMAX && (d->label[r] < 0 || (size_t)d->label[r] >= K)) {
            util_fmt(err, errlen, "%s: row %zu: label %d out of range", what, r, (int)d->label[r]);
            return -1;
        }
        if (obj == GBM_SQUARED && !isfinite(d->target[r])) {
            util_fmt(err, errlen, "%s: row %zu: target not finite", what, r);
            return -1;
        }
        float w = d->weight ? d->weight[r] : 1.0f;
        if (!(w >= 0.0f) || !isfinite(w)) {
            util_fmt(err, errlen, "%s: row %zu: weight not finite and >= 0", what, r);
            return -1;
        }
        s += w;
        mx = w > mx ? w : mx;
    }
    if (!(s > 0.0)) {
        util_fmt(err, errlen, "%s: total weight is 0", what);
        return -1;
    }
    *wsum = s;
    *wmax = mx;
    return 0;
}

static void fit_free(struct fit *ft)
{
    pool_stop(ft);
    if (ft->ts) {
        for (unsigned t = 0; t < ft->n_threads; t++) {
            free(ft->ts[t].h32_raw);
            free(ft->ts[t].h64_raw);
            free(ft->ts[t].gq_raw);
            free(ft->ts[t].scratch_raw);
        }
    }
    free(ft->ts);
    free(ft->marg_tr_raw);
    free(ft->marg_va_raw);
    free(ft->u);
    free(ft->loss_tr);
    free(ft->loss_va);
    free(ft->mass);
    free(ft->bad_row);
    free(ft->upd_feat);
    free(ft->upd_raw);
    free(ft->cand);
    free(ft->ev_va);
    free(ft->root_g);
    free(ft->root_h);
}

/*
 * Checks the inputs, allocates everything the rounds need, starts the
 * threads, and computes the training distribution.  On failure the caller
 * still calls fit_free.
 */
static int fit_init(struct fit *ft, enum gbm_objective obj, size_t K, const struct gbm_data *tr,
                    const struct gbm_data *va, const struct gbm_params *p, struct worker_arg *args,
                    char *err, size_t errlen)
{
    float wmax = 0.0f, wmax_va = 0.0f;
    memset(ft, 0, sizeof *ft);
    ft->pool.n = 1;
    if (check_params(p, err, errlen) < 0)
        return -1;
    if (!tr) {
        util_fmt(err, errlen, "no training data");
        return -1;
    }
    if (check_features(tr, err, errlen) < 0 ||
        check_rows(tr, obj, K, "train", &ft->wsum_tr, &wmax, err, errlen) < 0)
        return -1;
    if (va && check_rows(va, obj, K, "valid", &ft->wsum_va, &wmax_va, err, errlen) < 0)
        return -1;
    if (va) {
        bool ok = va->n_features == tr->n_features && va->bins;
        for (size_t f = 0; ok && f < va->n_features; f++)
            ok = va->bins[f] != NULL;
        if (!ok) {
            util_fmt(err, errlen, "valid: features differ from train");
            return -1;
        }
    }
    if (!(wmax > 0.0f)) {
        util_fmt(err, errlen, "train: total weight is 0");
        return -1;
    }
    ft->obj = obj;
    ft->K = K;
    ft->NV = (K + 7) / 8;
    ft->L = ft->NV * 8;
    ft->F = tr->n_features;
    ft->tr = tr;
    ft->va = va;
    ft->feat = tr->features;
    ft->p = p;
    ft->nb_tr = (tr->n_rows + GBM_BLOCK - 1) / GBM_BLOCK;
    ft->nb_va = va ? (va->n_rows + GBM_BLOCK - 1) / GBM_BLOCK : 0;
    unsigned nt = p->threads;
    if (nt > ft->nb_tr && nt > ft->F)
        nt = (unsigned)(ft->nb_tr > ft->F ? ft->nb_tr : ft->F);
    ft->n_threads = nt;

    size_t NV = ft->NV, L = ft->L, F = ft->F;
    ft->marg_tr = alloc_aligned(tr->n_rows * NV * sizeof(v8sf), &ft->marg_tr_raw);
    ft->u = util_calloc(tr->n_rows, sizeof *ft->u);
    ft->loss_tr = util_calloc(ft->nb_tr, sizeof *ft->loss_tr);
    ft->mass = util_calloc(F * (GBM_MAX_BINS + 1), sizeof *ft->mass);
    ft->bad_row = util_calloc(F, sizeof *ft->bad_row);
    ft->upd_feat = util_calloc(K, sizeof *ft->upd_feat);
    ft->upd_lut = alloc_aligned(K * SLOTS * NV * sizeof(v8sf), &ft->upd_raw);
    ft->cand = util_calloc(F * K, sizeof *ft->cand);
    ft->root_g = util_calloc(K, sizeof *ft->root_g);
    ft->root_h = util_calloc(K, sizeof *ft->root_h);
    ft->ts = util_calloc(nt, sizeof *ft->ts);
    ft->ev_va = util_calloc(3 * (va ? eval_blocks(va) : 1), sizeof *ft->ev_va);
    if (!ft->marg_tr || !ft->u || !ft->loss_tr || !ft->mass || !ft->bad_row || !ft->upd_feat ||
        !ft->upd_lut || !ft->cand || !ft->root_g || !ft->root_h || !ft->ts || !ft->ev_va)
        goto oom;
    if (va) {
        ft->marg_va = alloc_aligned(va->n_rows * NV * sizeof(v8sf), &ft->marg_va_raw);
        ft->loss_va = util_calloc(ft->nb_va, sizeof *ft->loss_va);
        if (!ft->marg_va || !ft->loss_va)
            goto oom;
    }
    for (unsigned t = 0; t < nt; t++) {
        struct thread_state *ts = &ft->ts[t];
        ts->h32 = alloc_aligned(F * SLOTS * 2 * NV * sizeof(v8si), &ts->h32_raw);
        ts->h64 = alloc_aligned(F * SLOTS * 2 * L * sizeof(int64_t), &ts->h64_raw);
        ts->gq = alloc_aligned((size_t)GBM_BLOCK * 2 * NV * sizeof(v8si), &ts->gq_raw);
        size_t gh = K * 2 * (GBM_MAX_BINS + 1) * sizeof(double);
        size_t tot = (size_t)SLOTS * 2 * L * sizeof(int64_t);
        ts->gh = alloc_aligned(gh + tot, &ts->scratch_raw);
        if (!ts->h32 || !ts->h64 || !ts->gq || !ts->gh)
            goto oom;
        ts->tot = (int64_t *)(void *)((char *)ts->gh + gh);
        memset(ts->h32, 0, F * SLOTS * 2 * NV * sizeof(v8si));
    }

    /* Lanes past K stay out of the softmax. */
    for (size_t k = 0; k < L; k++) {
        ft->padc[k] = SPLAT(k < K ? 0.0f : -1e30f);
        ft->cmask[k] = k < K ? 1.0f : 0.0f;
    }
    for (size_t r = 0; r < tr->n_rows; r++)
        ft->u[r] = (uint32_t)(mix64(p->seed ^ mix64(r)) >> 32);

    if (obj == GBM_SOFTMAX) {
        ft->sg = 16384.0f / wmax;
        ft->sh = 32768.0f / wmax;
    } else {
        double base = 0.0, rmax = 0.0;
        for (size_t r = 0; r < tr->n_rows; r++)
            base += (double)(tr->weight ? tr->weight[r] : 1.0f) * tr->target[r];
        base /= ft->wsum_tr;
        for (size_t r = 0; r < tr->n_rows; r++) {
            double e = fabs(tr->target[r] - base) * (tr->weight ? tr->weight[r] : 1.0f);
            rmax = e > rmax ? e : rmax;
        }
        ft->sg = rmax > 1e-30 ? (float)(16384.0 / (2.0 * rmax)) : 1.0f;
        ft->sh = 16384.0f / wmax;
        if (!isfinite(ft->sg) || !(ft->sg > 0.0f))
            ft->sg = 1.0f;
    }
#if GBM_X86_GCC
    ft->avx512 = gbm_allow_avx512 && __builtin_cpu_supports("avx512f");
#endif
    ft->inv_sg = 1.0 / (double)ft->sg;
    ft->inv_sh = 1.0 / (double)ft->sh;

    pool_start(ft, nt, args);
    run(ft, phase_mass);
    for (size_t f = 0; f < F; f++) {
        size_t r = ft->bad_row[f];
        if (r == SIZE_MAX)
            continue;
        const char *what = r < tr->n_rows ? "train" : "valid";
        if (r >= tr->n_rows)
            r -= tr->n_rows;
        util_fmt(err, errlen, "%s: row %zu: feature %s: bin out of range", what, r,
                 ft->feat[f].name);
        return -1;
    }
    return 0;
oom:
    util_fmt(err, errlen, "out of memory");
    return -1;
}

/* Margins of every row start at the base. */
static void init_margins(struct fit *ft, const double *base)
{
    v8sf b[GBM_MAX_CLASSES / 8];
    memset(b, 0, sizeof b);
    for (size_t k = 0; k < ft->K; k++)
        b[k / 8][k % 8] = (float)base[k];
    for (size_t r = 0; r < ft->tr->n_rows; r++)
        memcpy(ft->marg_tr + r * ft->NV, b, ft->NV * sizeof(v8sf));
    for (size_t r = 0; ft->va && r < ft->va->n_rows; r++)
        memcpy(ft->marg_va + r * ft->NV, b, ft->NV * sizeof(v8sf));
}

/* Turns this round's best splits into stumps and the next lookup tables. */
static void make_stumps(struct fit *ft, struct gbm_stump *out)
{
    const size_t K = ft->K, NV = ft->NV;
    const double lambda = ft->p->lambda, eta = ft->p->learning_rate;
    ft->n_upd = 0;
    memset(ft->cadd, 0, sizeof ft->cadd);
    for (size_t k = 0; k < K; k++) {
        const struct gbm_split *best = NULL;
        size_t bf = 0;
        for (size_t f = 0; f < ft->F; f++) {
            const struct gbm_split *c = &ft->cand[f * K + k];
            if (c->found && c->gain > GBM_MIN_GAIN && (!best || c->gain > best->gain)) {
                best = c;
                bf = f;
            }
        }
        struct gbm_stump *s = &out[k];
        memset(s, 0, sizeof *s);
        if (!best) {
            s->feature = -1;
            s->left_value = s->right_value =
                gbm_leaf_value(ft->root_g[k], ft->root_h[k], lambda, eta);
            ft->cadd[k / 8][k % 8] = (float)s->left_value;
            continue;
        }
        const struct gbm_feature *fe = &ft->feat[bf];
        s->feature = (int32_t)bf;
        s->default_left = best->default_left;
        s->gain = best->gain;
        memcpy(s->left, best->left_bins, sizeof s->left);
        if (fe->kind == GBM_NUMERIC) {
            s->bin = (uint8_t)best->threshold_bin;
            s->threshold = fe->cuts[best->threshold_bin];
        }
        s->left_value = gbm_leaf_value(best->g_left, best->h_left, lambda, eta);
        s->right_value = gbm_leaf_value(best->g_right, best->h_right, lambda, eta);

        size_t u = 0;
        while (u < ft->n_upd && ft->upd_feat[u] != s->feature)
            u++;
        v8sf *lut = ft->upd_lut + u * SLOTS * NV;
        if (u == ft->n_upd) {
            ft->upd_feat[ft->n_upd++] = s->feature;
            memset(lut, 0, SLOTS * NV * sizeof(v8sf));
        }
        float lv = (float)s->left_value, rv = (float)s->right_value;
        for (unsigned b = 0; b < fe->n_bins; b++) {
            bool left = (s->left[b / 64] >> (b % 64)) & 1;
            lut[b * NV + k / 8][k % 8] = left ? lv : rv;
        }
        lut[GBM_MISSING_BIN * NV + k / 8][k % 8] = s->default_left ? lv : rv;
    }
}

static double block_sum(const double *a, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    return s;
}

/*
 * The boosting loop.  Fills b->stumps, n_rounds (the best round) and
 * rounds_trained.  Returns 0 or -1 (out of memory).
 */
static int boost(struct fit *ft, struct gbm_booster *b, gbm_progress_fn progress, void *arg)
{
    const struct gbm_params *p = ft->p;
    size_t cap = 0;
    unsigned best = 0;
    double best_loss = HUGE_VAL;
    bool stop = false;
    unsigned t;
    for (t = 0;; t++) {
        ft->do_grad = t < p->rounds;
        ft->cd = (uint32_t)(mix64(t) >> 32);
        atomic_store(&ft->next_block, 0);
        run(ft, phase_rows);
        if (t > 0) {
            double lt = block_sum(ft->loss_tr, ft->nb_tr) / ft->wsum_tr;
            double lv = ft->va ? block_sum(ft->loss_va, ft->nb_va) / ft->wsum_va : NAN;
            /* Without early stopping every round is kept: choosing the
             * round by validation loss would make that loss optimistic. */
            if (!ft->va || p->early_stop == 0 || lv < best_loss) {
                best_loss = lv;
                best = t;
                ft->train_loss_best = lt;
            } else if (p->early_stop > 0 && t - best >= p->early_stop) {
                stop = true;
            }
            if (progress && progress(arg, t, lt, lv) != 0)
                stop = true;
        }
        if (!ft->do_grad || stop)
            break;
        if (((size_t)t + 1) * ft->K > cap) {
            size_t ncap = cap ? cap * 2 : 64 * ft->K;
            struct gbm_stump *ns = util_realloc(b->stumps, ncap * sizeof *ns);
            if (!ns)
                return -1;
            b->stumps = ns;
            cap = ncap;
        }
        run(ft, phase_features);
        make_stumps(ft, b->stumps + (size_t)t * ft->K);
    }
    b->rounds_trained = t;
    b->n_rounds = best;
    return 0;
}

static int booster_init(struct gbm_booster *b, enum gbm_objective obj, size_t K,
                        const struct gbm_params *p)
{
    memset(b, 0, sizeof *b);
    b->objective = obj;
    b->K = K;
    b->params = *p;
    b->train_loss = b->valid_loss = b->valid_accuracy = NAN;
    b->base_margin = util_calloc(K, sizeof *b->base_margin);
    return b->base_margin ? 0 : -1;
}

int gbm_fit(const struct gbm_data *train, const struct gbm_data *valid, size_t n_classes,
            const char *const *class_names, const struct gbm_params *p, gbm_progress_fn progress,
            void *progress_arg, struct gbm_model **out, char *err, size_t errlen)
{
    struct fit ft;
    struct worker_arg args[GBM_MAX_THREADS];
    struct gbm_model *m = NULL;
    int rc = -1;
    *out = NULL;
    memset(&ft, 0, sizeof ft);
    if (n_classes < 2 || n_classes > GBM_MAX_CLASSES || !class_names) {
        util_fmt(err, errlen, "need 2..%d classes", GBM_MAX_CLASSES);
        return -1;
    }
    for (size_t k = 0; k < n_classes; k++) {
        if (!class_names[k] || !class_names[k][0]) {
            util_fmt(err, errlen, "class %zu: empty name", k);
            return -1;
        }
        for (size_t j = 0; j < k; j++) {
            if (strcmp(class_names[j], class_names[k]) == 0) {
                util_fmt(err, errlen, "class %zu: duplicate name \"%s\"", k, class_names[k]);
                return -1;
            }
        }
    }
    if (fit_init(&ft, GBM_SOFTMAX, n_classes, train, valid, p, args, err, errlen) < 0)
        goto out;
    m = gbm_model_alloc(ft.F, n_classes);
    if (!m || booster_init(&m->cls, GBM_SOFTMAX, n_classes, p) < 0)
        goto oom;
    for (size_t k = 0; k < n_classes; k++) {
        m->classes[k] = util_strdup(class_names[k]);
        if (!m->classes[k])
            goto oom;
    }
    for (size_t f = 0; f < ft.F; f++) {
        if (gbm_feat_copy(&m->feat[f], &train->features[f], ft.mass + f * (GBM_MAX_BINS + 1)) < 0)
            goto oom;
    }
    if (valid && gbm_model_check_features(m, valid, err, errlen) < 0)
        goto out;
    init_margins(&ft, m->cls.base_margin);
    if (boost(&ft, &m->cls, progress, progress_arg) < 0 || gbm_booster_compile(m, &m->cls) < 0)
        goto oom;
    evaluate(&ft, m, &m->cls);
    *out = m;
    m = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    fit_free(&ft);
    gbm_model_free(m);
    return rc;
}

int gbm_fit_magnitude(struct gbm_model *m, const char *class_name, const struct gbm_data *train,
                      const struct gbm_data *valid, const struct gbm_params *p, char *err,
                      size_t errlen)
{
    struct fit ft;
    struct worker_arg args[GBM_MAX_THREADS];
    struct gbm_booster *b = NULL;
    int rc = -1;
    memset(&ft, 0, sizeof ft);
    int k = gbm_model_class_index(m, class_name);
    if (k < 0) {
        util_fmt(err, errlen, "unknown class \"%s\"", class_name ? class_name : "(null)");
        return -1;
    }
    if (!train || gbm_model_check_features(m, train, err, errlen) < 0 ||
        (valid && gbm_model_check_features(m, valid, err, errlen) < 0)) {
        if (!train)
            util_fmt(err, errlen, "no training data");
        return -1;
    }
    if (fit_init(&ft, GBM_SQUARED, 1, train, valid, p, args, err, errlen) < 0)
        goto out;
    b = util_calloc(1, sizeof *b);
    if (!b || booster_init(b, GBM_SQUARED, 1, p) < 0)
        goto oom;
    double base = 0.0;
    for (size_t r = 0; r < train->n_rows; r++)
        base += (double)(train->weight ? train->weight[r] : 1.0f) * train->target[r];
    b->base_margin[0] = base / ft.wsum_tr;
    init_margins(&ft, b->base_margin);
    if (boost(&ft, b, NULL, NULL) < 0 || gbm_booster_compile(m, b) < 0)
        goto oom;
    evaluate(&ft, m, b);
    gbm_booster_free(m->mag[k]);
    m->mag[k] = b;
    b = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    fit_free(&ft);
    gbm_booster_free(b);
    return rc;
}
