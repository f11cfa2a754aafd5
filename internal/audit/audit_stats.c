/*
 * audit: the tests behind the findings.  Pure functions of numbers.
 *
 * Poisson-binomial tails.  Under the reference, decision i of an operator is
 * the class with probability p_i, independently given the states, so the
 * count S of the class is a sum of Bernoulli(p_i).  The tail is computed
 * exactly by dynamic programming over the count, with the counts at or past
 * the tested value kept in one absorbing cell, so a tiny tail is a sum of
 * positive terms and keeps its precision:
 *
 *     upper: P(S >= k)      cells 0..k,     cell k absorbs S >= k
 *     lower: P(S <= k)      cells 0..k+1,   cell k+1 absorbs S > k
 *
 * That costs n * (k + 2) steps; above EXACT_BUDGET steps the refined normal
 * approximation is used instead, with mean mu = sum p_i, variance
 * s^2 = sum p_i (1 - p_i), skewness g = sum p_i (1 - p_i)(1 - 2 p_i) / s^3:
 *
 *     P(S <= k) ~ G((k + 0.5 - mu) / s),  G(x) = Phi(x) + g (1 - x^2) phi(x) / 6
 *
 * which is accurate when s is large, the only case it is used in (a large
 * k needs a large expected count for the test to be close).
 *
 * Binomial tails and Student's t go through the regularized incomplete beta
 * function I_x(a, b), evaluated by its continued fraction (modified Lentz),
 * on the side of x that converges fast:
 *
 *     P(X >= k), X ~ Bin(n, p)  =  I_p(k, n - k + 1)
 *     P(|T| >= t), T ~ t(df)    =  I_{df / (df + t^2)}(df / 2, 1 / 2)
 *
 * Benjamini-Hochberg: with p sorted ascending, q_(i) = min over j >= i of
 * p_(j) * m / j, at most 1.
 */
#include "audit/audit.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define EXACT_BUDGET 60000000.0

double audit_norm_upper(double z)
{
    return 0.5 * erfc(z / sqrt(2.0));
}

static double norm_pdf(double x)
{
    return exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
}

/* The skew-corrected normal P(S <= x) (x already continuity-corrected). */
static double rna_cdf(double x, double mu, double var, double skew_num)
{
    if (var <= 0)
        return x >= mu ? 1.0 : 0.0;
    double s = sqrt(var);
    double z = (x - mu) / s;
    double g = skew_num / (var * s);
    double v = 1.0 - audit_norm_upper(z) + g * (1.0 - z * z) * norm_pdf(z) / 6.0;
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

double audit_pbinom_tail(const double *p, size_t n, double k, bool upper, enum audit_test *test)
{
    double mu = 0, var = 0, sk = 0;
    for (size_t i = 0; i < n; i++) {
        double q = p[i] < 0 ? 0 : p[i] > 1 ? 1 : p[i];
        mu += q;
        var += q * (1 - q);
        sk += q * (1 - q) * (1 - 2 * q);
    }
    if (k < 0)
        k = 0;
    k = floor(k + 0.5);
    if (upper && k <= 0) {
        if (test)
            *test = AUDIT_TEST_POISSON_BINOMIAL;
        return 1.0;
    }
    if (upper && k > (double)n)
        return test ? (*test = AUDIT_TEST_POISSON_BINOMIAL, 0.0) : 0.0;
    if (!upper && k >= (double)n)
        return test ? (*test = AUDIT_TEST_POISSON_BINOMIAL, 1.0) : 1.0;

    size_t cells = (size_t)k + (upper ? 1 : 2);
    if ((double)n * (double)cells > EXACT_BUDGET) {
        if (test)
            *test = AUDIT_TEST_NORMAL_SKEW;
        if (upper) {
            double v = 1.0 - rna_cdf(k - 0.5, mu, var, sk);
            double floor_v = var > 0 ? audit_norm_upper((k - 0.5 - mu) / sqrt(var)) * 1e-3 : 0;
            return v > floor_v ? v : floor_v;
        }
        return rna_cdf(k + 0.5, mu, var, sk);
    }
    if (test)
        *test = AUDIT_TEST_POISSON_BINOMIAL;
    double *d = util_calloc(cells, sizeof *d);
    if (!d) {
        /* Out of memory: fall back to the approximation rather than fail. */
        if (test)
            *test = AUDIT_TEST_NORMAL_SKEW;
        return upper ? 1.0 - rna_cdf(k - 0.5, mu, var, sk) : rna_cdf(k + 0.5, mu, var, sk);
    }
    size_t last = cells - 1; /* the absorbing cell */
    size_t top = 0;          /* highest cell reached so far */
    d[0] = 1.0;
    for (size_t i = 0; i < n; i++) {
        double q = p[i] < 0 ? 0 : p[i] > 1 ? 1 : p[i];
        size_t hi = top + 1 < last ? top + 1 : last;
        d[last] += d[last - 1] * q * (top + 1 >= last);
        for (size_t j = (hi == last ? last - 1 : hi); j >= 1; j--)
            d[j] = d[j] * (1 - q) + d[j - 1] * q;
        d[0] *= 1 - q;
        top = hi;
    }
    double v;
    if (upper) {
        v = d[last];
    } else {
        v = 0;
        for (size_t j = 0; j < last; j++)
            v += d[j];
    }
    free(d);
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* Continued fraction of the incomplete beta (modified Lentz). */
static double beta_cf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1;
    double c = 1, d = 1 - qab * x / qap;
    if (fabs(d) < tiny)
        d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 10000; m++) {
        double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny)
            d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny)
            d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15)
            break;
    }
    return h;
}

/* Regularized incomplete beta I_x(a, b). */
static double ibeta(double a, double b, double x)
{
    if (x <= 0)
        return 0;
    if (x >= 1)
        return 1;
    /* lgamma_r: lgamma's sign goes to a global, and audits run in a thread. */
    int sg;
    double lbt =
        lgamma_r(a + b, &sg) - lgamma_r(a, &sg) - lgamma_r(b, &sg) + a * log(x) + b * log1p(-x);
    if (x < (a + 1) / (a + b + 2))
        return exp(lbt) * beta_cf(a, b, x) / a;
    return 1 - exp(lbt) * beta_cf(b, a, 1 - x) / b;
}

double audit_binom_tail(uint64_t n, double p, uint64_t k, bool upper)
{
    if (p <= 0)
        return upper ? (k == 0 ? 1.0 : 0.0) : 1.0;
    if (p >= 1)
        return upper ? 1.0 : (k >= n ? 1.0 : 0.0);
    if (upper) {
        if (k == 0)
            return 1.0;
        if (k > n)
            return 0.0;
        return ibeta((double)k, (double)(n - k + 1), p);
    }
    if (k >= n)
        return 1.0;
    /* P(X <= k) = 1 - P(X >= k + 1) = I_{1-p}(n - k, k + 1) */
    return ibeta((double)(n - k), (double)(k + 1), 1 - p);
}

double audit_t_two_sided(double t, double df)
{
    if (!isfinite(t))
        return isnan(t) ? 1.0 : 0.0;
    if (df <= 0)
        return 1.0;
    if (df > 1e7)
        return 2 * audit_norm_upper(fabs(t));
    double v = ibeta(df / 2, 0.5, df / (df + t * t));
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

struct pidx {
    double p;
    size_t i;
};

static int pidx_cmp(const void *a, const void *b)
{
    const struct pidx *x = a, *y = b;
    if (x->p < y->p)
        return -1;
    if (x->p > y->p)
        return 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

void audit_bh(const double *p, size_t n, double *q)
{
    if (n == 0)
        return;
    struct pidx *s = util_calloc(n, sizeof *s);
    if (!s) {
        /* Out of memory: Bonferroni is a valid (stricter) fallback. */
        for (size_t i = 0; i < n; i++) {
            double v = p[i] * (double)n;
            q[i] = v > 1 ? 1 : v;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s[i].p = isnan(p[i]) ? 1.0 : p[i];
        s[i].i = i;
    }
    qsort(s, n, sizeof *s, pidx_cmp);
    double run = 1.0;
    for (size_t j = n; j-- > 0;) {
        double v = s[j].p * (double)n / (double)(j + 1);
        if (v < run)
            run = v;
        s[j].p = run;
    }
    for (size_t j = 0; j < n; j++)
        q[s[j].i] = s[j].p;
    free(s);
}
