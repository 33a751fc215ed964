/* scANVI's classifier terms against scvi-tools 1.5.1 (tests/golden/scanvi_<case>.h5,
 * layout in tests/golden/README_scanvi.md): from the recorded classifier logits,
 *   - av_op_xent on the labelled minibatch's logits and labels gives scvi's
 *     classification_loss (the mean cross-entropy), and
 *   - av_op_softmax then av_op_kl_categorical against params/y_prior give scvi's
 *     per-cell KL(Cat(q) || Cat(y_prior)) (out/kl_cat) and its probabilities (out/probs);
 *   - av_op_normal_logpdf gives log q(z1|x) (out/log_qz1) and the z1-prior term A [N,K]
 *     over the enumerated rows (out/A).
 * The whole scANVI graph is not built here yet; these are the ops it needs that scVI
 * does not. Usage: test_scanvi_ops GOLDEN_DIR. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/graph.h"

static int failures = 0;

/* Reads a float32 or int32 dataset whole; dims of up to 2; aborts when it is absent. */
static void *read_ds(hid_t f, const char *path, hid_t type, int64_t dims[2]) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "test_scanvi_ops: no dataset %s\n", path);
        exit(1);
    }
    hid_t s = H5Dget_space(d);
    hsize_t hd[2] = {1, 1};
    int r = H5Sget_simple_extent_dims(s, hd, NULL);
    dims[0] = (int64_t)hd[0];
    dims[1] = r > 1 ? (int64_t)hd[1] : 1;
    void *buf = malloc(4 * (size_t)(dims[0] * dims[1]));
    if (!buf || H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        fprintf(stderr, "test_scanvi_ops: cannot read %s\n", path);
        exit(1);
    }
    H5Sclose(s);
    H5Dclose(d);
    return buf;
}

static void expect(const char *cas, const char *what, double got, double ref, double tol) {
    double err = fabs(got - ref) / (fabs(ref) + 1e-6);
    if (err > tol) {
        printf("%s: %s is %.8g, scvi-tools %.8g (relative error %.2e)\n", cas, what, got, ref, err);
        failures++;
    }
}

/* A graph whose only parameter is x [rows, cols], filled with the recorded values. */
static AvTensor *logits_param(AvGraph *g, const float *v, int64_t rows, int64_t cols) {
    av_graph_init(g, rows, 1);
    AvTensor *x = av_param(g, "logits", rows, cols);
    av_graph_alloc_params(g);
    memcpy(x->v, v, sizeof(float) * (size_t)(rows * cols));
    return x;
}

/* Largest |got - ref| / (|ref| + 1e-3) over n values. */
static double worst_rel(const float *got, const float *ref, int64_t n) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(got[i] - ref[i]) / (fabs(ref[i]) + 1e-3));
    return w;
}

/* av_op_normal_logpdf on the recorded tensors: log q(z1|x) of the sampled z1, and
 * A[i,k] = -log N(z1_i; pz1_m, sqrt(pz1_v)) over the enumerated rows k*N + i. */
static void check_logpdf(hid_t f, const char *cas, int64_t n, int64_t k) {
    int64_t d[2], dm[2];
    float *z = read_ds(f, "out/z", H5T_NATIVE_FLOAT, d);
    float *qm = read_ds(f, "out/qz_m", H5T_NATIVE_FLOAT, dm);
    float *qv = read_ds(f, "out/qz_v", H5T_NATIVE_FLOAT, dm);
    float *pm = read_ds(f, "out/pz1_m", H5T_NATIVE_FLOAT, dm);
    float *pv = read_ds(f, "out/pz1_v", H5T_NATIVE_FLOAT, dm);
    float *log_qz1 = read_ds(f, "out/log_qz1", H5T_NATIVE_FLOAT, dm);
    float *a_ref = read_ds(f, "out/A", H5T_NATIVE_FLOAT, dm);
    int64_t l = d[1];
    AvGraph g;
    av_graph_init(&g, n * k, 1);
    AvTensor *x = av_param(&g, "x", n * k, l), *mu = av_param(&g, "mu", n * k, l),
             *var = av_param(&g, "var", n * k, l);
    av_graph_alloc_params(&g);
    AvTensor *y = av_op_normal_logpdf(&g, x, mu, var);
    AvBatch b = {0};
    /* log q(z1|x): the first n rows */
    memcpy(x->v, z, sizeof(float) * (size_t)(n * l));
    memcpy(mu->v, qm, sizeof(float) * (size_t)(n * l));
    memcpy(var->v, qv, sizeof(float) * (size_t)(n * l));
    b.n = (int)n;
    b.n_global = n;
    av_graph_forward(&g, &b);
    double e_q = worst_rel(y->v, log_qz1, n);
    /* A: z1 repeated once per label, block layout */
    for (int64_t c = 0; c < k; c++) memcpy(x->v + c * n * l, z, sizeof(float) * (size_t)(n * l));
    memcpy(mu->v, pm, sizeof(float) * (size_t)(n * k * l));
    memcpy(var->v, pv, sizeof(float) * (size_t)(n * k * l));
    b.n = (int)(n * k);
    b.n_global = n * k;
    av_graph_forward(&g, &b);
    float *a = malloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++) a[i * k + c] = -y->v[c * n + i];
    double e_a = worst_rel(a, a_ref, n * k);
    printf("%-12s log_qz1 rel err %.1e, A rel err %.1e\n", cas, e_q, e_a);
    if (e_q > 1e-4 || e_a > 1e-4) {
        printf("%s: normal log-density off (allowed 1e-4)\n", cas);
        failures++;
    }
    av_graph_free(&g);
    free(a), free(z), free(qm), free(qv), free(pm), free(pv), free(log_qz1), free(a_ref);
}

static void check_case(const char *dir, const char *cas) {
    char path[1024];
    snprintf(path, sizeof path, "%s/scanvi_%s.h5", dir, cas);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        printf("%s: cannot open %s\n", cas, path);
        failures++;
        return;
    }
    int64_t dl[2], dy[2], dq[2], dk[2], dc[2], dp[2], dce[2];
    float *logits_l = read_ds(f, "out/logits_l", H5T_NATIVE_FLOAT, dl);
    int32_t *labels_l = read_ds(f, "inputs/labels_l", H5T_NATIVE_INT32, dy);
    float *ce = read_ds(f, "out/classification_loss", H5T_NATIVE_FLOAT, dce);
    float *logits = read_ds(f, "out/class_logits", H5T_NATIVE_FLOAT, dc);
    float *probs = read_ds(f, "out/probs", H5T_NATIVE_FLOAT, dq);
    float *kl_cat = read_ds(f, "out/kl_cat", H5T_NATIVE_FLOAT, dk);
    float *prior = read_ds(f, "params/y_prior", H5T_NATIVE_FLOAT, dp);
    int64_t nl = dl[0], k = dl[1], n = dc[0];

    AvGraph g;
    AvTensor *x = logits_param(&g, logits_l, nl, k);
    AvTensor *y = av_op_xent(&g, x, 0);
    AvBatch b = {0};
    b.n = (int)nl;
    b.n_global = nl;
    b.n_cat = 1;
    b.cat = labels_l;
    av_graph_forward(&g, &b);
    double mean = 0;
    for (int64_t i = 0; i < nl; i++) mean += y->v[i];
    expect(cas, "classification_loss", mean / (double)nl, ce[0], 1e-5);
    av_graph_free(&g);

    x = logits_param(&g, logits, n, k);
    AvTensor *prior_t = av_buffer(&g, "y_prior", 1, k);
    memcpy(prior_t->v, prior, sizeof(float) * (size_t)k);
    AvTensor *q = av_op_softmax(&g, x);
    y = av_op_kl_categorical(&g, q, prior_t);
    b.n = (int)n;
    b.n_global = n;
    b.cat = NULL;
    b.n_cat = 0;
    av_graph_forward(&g, &b);
    double worst_q = 0, worst_kl = 0;
    for (int64_t i = 0; i < n * k; i++) worst_q = fmax(worst_q, fabs(q->v[i] - probs[i]));
    for (int64_t i = 0; i < n; i++)
        worst_kl = fmax(worst_kl, fabs(y->v[i] - kl_cat[i]) / (fabs(kl_cat[i]) + 1e-4));
    if (worst_q > 1e-6 || worst_kl > 1e-4) {
        printf("%s: probs max error %.2e (allowed 1e-6), kl_cat max relative error %.2e "
               "(allowed 1e-4)\n",
               cas, worst_q, worst_kl);
        failures++;
    }
    printf("%-12s K=%lld: classification_loss %.6g (scvi %.6g), probs err %.1e, kl_cat rel err "
           "%.1e\n",
           cas, (long long)k, mean / (double)nl, ce[0], worst_q, worst_kl);
    av_graph_free(&g);
    check_logpdf(f, cas, n, k);
    free(logits_l), free(labels_l), free(ce), free(logits), free(probs), free(kl_cat), free(prior);
    H5Fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_scanvi_ops GOLDEN_DIR\n");
        return 2;
    }
    const char *cases[] = {"default", "linear_nb", "layers2_b3", "learned_lib"};
    for (int c = 0; c < 4; c++) check_case(argv[1], cases[c]);
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
