/* Differential expression maths (model-spec.md 8.5-8.9), as scvi-tools' _differential.py
 * and _de_core.py compute it. */
#include "src/de.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

void av_de_col_means(const float *s, int64_t M, int64_t G, double *mean) {
    for (int64_t g = 0; g < G; g++) mean[g] = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t g = 0; g < G; g++) mean[g] += s[i * G + g];
    for (int64_t g = 0; g < G; g++) mean[g] = M > 0 ? mean[g] / (double)M : NAN;
}

void av_de_vanilla(const float *s1, const float *s2, int64_t M, int64_t G, double *proba_m1,
                   double *proba_m2, double *bayes_factor) {
    int64_t *cnt = av_calloc((size_t)(G + 1), sizeof(int64_t));
    for (int64_t i = 0; i < M; i++)
        for (int64_t g = 0; g < G; g++) cnt[g] += s1[i * G + g] > s2[i * G + g];
    for (int64_t g = 0; g < G; g++) {
        double p1 = M > 0 ? (double)cnt[g] / (double)M : NAN, p2 = 1.0 - p1;
        proba_m1[g] = p1;
        proba_m2[g] = p2;
        bayes_factor[g] = log(p1 + AV_DE_EPS) - log(p2 + AV_DE_EPS);
    }
    free(cnt);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double av_de_quantile_sorted(const double *a, int64_t n, double q) {
    if (n <= 0) return NAN;
    double v = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(v);
    if (lo >= n - 1) return a[n - 1];
    if (lo < 0) return a[0];
    double t = v - (double)lo;
    return a[lo] + (a[lo + 1] - a[lo]) * t;
}

/* 0.9-quantile of the per-gene maxima of s over the genes where raw_mean < threshold. */
static double artefact_level(const float *s, int64_t M, int64_t G, const double *raw_mean,
                             double threshold, double quantile) {
    double *mx = av_malloc(sizeof(double) * (size_t)(G + 1));
    int64_t n = 0;
    for (int64_t g = 0; g < G; g++) {
        if (!(raw_mean[g] < threshold)) continue;
        double m = -INFINITY;
        for (int64_t i = 0; i < M; i++) m = s[i * G + g] > m ? s[i * G + g] : m;
        mx[n++] = m;
    }
    double r = 1e-10;
    if (n > 0) {
        qsort(mx, (size_t)n, sizeof(double), cmp_double);
        r = av_de_quantile_sorted(mx, n, quantile);
    }
    free(mx);
    return r;
}

double av_de_pseudocount(const float *s1, int64_t M1, const float *s2, int64_t M2, int64_t G,
                         const double *raw_mean1, const double *raw_mean2, double threshold,
                         double quantile) {
    double ea = artefact_level(s1, M1, G, raw_mean1, threshold, quantile);
    double eb = artefact_level(s2, M2, G, raw_mean2, threshold, quantile);
    double r = (ea > eb ? ea : eb) / (double)G;
    return r > 1e-10 ? r : 1e-10;
}

int av_de_hpd_sorted(const double *a, int64_t n, double level, double *lo, double *hi) {
    int64_t inc = (int64_t)floor(level * (double)n);
    int64_t n_int = n - inc;
    if (n_int <= 0 || inc < 0) return -1;
    int64_t best = 0;
    double w = a[inc] - a[0];
    for (int64_t i = 1; i < n_int; i++) {
        double wi = a[i + inc] - a[i];
        if (wi < w) {
            w = wi;
            best = i;
        }
    }
    *lo = a[best];
    *hi = a[best + inc];
    return 0;
}

void av_de_change(const float *s1, const float *s2, int64_t M, int64_t G, double pc, double delta,
                  int test_mode_two, int n_cred, const double *cred_levels, AvDeChange *o) {
    double pc_small = 1e-3 * pc;
#pragma omp parallel
    {
        double *lfc = av_malloc(sizeof(double) * (size_t)(M + 1));
#pragma omp for schedule(dynamic, 16)
        for (int64_t g = 0; g < G; g++) {
            int64_t up = 0, down = 0;
            double sum = 0;
            for (int64_t i = 0; i < M; i++) {
                double a = s1[i * G + g], b = s2[i * G + g];
                double r = log2(a + pc) - log2(b + pc);
                up += r >= delta;
                down += r < -delta;
                lfc[i] = log2(a + pc_small) - log2(b + pc_small);
                sum += lfc[i];
            }
            double pu = (double)up / (double)M, pd = (double)down / (double)M;
            double p = test_mode_two ? pu + pd : (pu > pd ? pu : pd);
            o->proba_de[g] = p;
            o->proba_not_de[g] = 1.0 - p;
            o->bayes_factor[g] = log(p + AV_DE_EPS) - log(1.0 - p + AV_DE_EPS);
            double mean = sum / (double)M, ss = 0;
            for (int64_t i = 0; i < M; i++) ss += (lfc[i] - mean) * (lfc[i] - mean);
            qsort(lfc, (size_t)M, sizeof(double), cmp_double);
            o->lfc_mean[g] = mean;
            o->lfc_std[g] = sqrt(ss / (double)M);
            o->lfc_min[g] = lfc[0];
            o->lfc_max[g] = lfc[M - 1];
            o->lfc_median[g] = M % 2 ? lfc[M / 2] : 0.5 * (lfc[M / 2 - 1] + lfc[M / 2]);
            for (int c = 0; c < n_cred; c++) {
                double lo = NAN, hi = NAN;
                av_de_hpd_sorted(lfc, M, cred_levels[c], &lo, &hi);
                o->ci_lo[c * G + g] = lo;
                o->ci_hi[c * G + g] = hi;
            }
        }
        free(lfc);
    }
}

/* Merge sort of indices by key descending, stable, NaN last. */
static int before(double a, double b) {
    if (isnan(b)) return !isnan(a);
    return a > b;
}

static void merge_sort(const double *key, int64_t *idx, int64_t *tmp, int64_t n) {
    if (n < 2) return;
    int64_t h = n / 2;
    merge_sort(key, idx, tmp, h);
    merge_sort(key, idx + h, tmp, n - h);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = before(key[idx[j]], key[idx[i]]) ? idx[j++] : idx[i++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, sizeof(int64_t) * (size_t)n);
}

void av_de_order_desc(const double *key, int64_t n, int64_t *order) {
    for (int64_t i = 0; i < n; i++) order[i] = i;
    int64_t *tmp = av_malloc(sizeof(int64_t) * (size_t)(n + 1));
    merge_sort(key, order, tmp, n);
    free(tmp);
}

void av_de_fdr_flags(const double *p, int64_t n, double target, uint8_t *flags) {
    int64_t *order = av_malloc(sizeof(int64_t) * (size_t)(n + 1));
    av_de_order_desc(p, n, order);
    double cum = 0;
    int64_t d = 0;
    for (int64_t k = 0; k < n; k++) {
        cum += 1.0 - p[order[k]];
        if (cum / (double)(k + 1) <= target) d++;
    }
    for (int64_t k = 0; k < n; k++) flags[k] = 0;
    for (int64_t k = 0; k < d; k++) flags[order[k]] = 1;
    free(order);
}

void av_de_format_double(double x, char *buf) {
    if (isnan(x)) {
        strcpy(buf, "nan");
        return;
    }
    if (isinf(x)) {
        strcpy(buf, x > 0 ? "inf" : "-inf");
        return;
    }
    if (x == 0) {
        strcpy(buf, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    /* shortest digits that read back to x */
    char e[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    if (p > 17) p = 17;
    /* e = [-]d[.ddd]e[+-]XX: collect the digits and the exponent */
    char digits[24];
    int nd = 0, neg = x < 0;
    const char *c = e + neg;
    for (; *c && *c != 'e'; c++)
        if (*c >= '0' && *c <= '9') digits[nd++] = *c;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = atoi(c + 1);
    char *o = buf;
    if (neg) *o++ = '-';
    if (exp10 >= -5 + 1 && exp10 < 16) { /* Python: fixed notation for -4 <= exp < 16 */
        if (exp10 < 0) {
            *o++ = '0';
            *o++ = '.';
            for (int k = 0; k < -exp10 - 1; k++) *o++ = '0';
            for (int k = 0; k < nd; k++) *o++ = digits[k];
        } else {
            for (int k = 0; k <= exp10; k++) *o++ = k < nd ? digits[k] : '0';
            *o++ = '.';
            if (nd > exp10 + 1)
                for (int k = exp10 + 1; k < nd; k++) *o++ = digits[k];
            else
                *o++ = '0';
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int k = 1; k < nd; k++) *o++ = digits[k];
        }
        sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}
