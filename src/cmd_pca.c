/* atlasvi pca: distributed PCA of log-normalized counts (src/pca.h). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "src/cli.h"
#include "src/cmd_common.h"
#include "src/pca.h"
#include "src/util.h"

static void usage(void) {
    printf("usage: atlasvi pca INPUT --output OUT.h5ad | --write-input [options]\n\n");
    printf("PCA as scanpy's normalize_total(target_sum=1e4), log1p, pca(): counts normalized\n"
           "per cell, log1p, centred (not scaled); the gene x gene covariance is summed over\n"
           "the ranks and its eigenvectors found with ScaLAPACK over all ranks.\n\n");
    printf("  --output OUT.h5ad       new .h5ad with obs, var and obsm/<key>\n"
           "  --write-input           write obsm/<key> into INPUT itself, atomically\n"
           "  --key X_pca             obsm key\n"
           "  --layer L               counts in layers/L (default X)\n"
           "  --n-comps 50            number of components\n"
           "  --hvg-from FILE         use only the genes with var/highly_variable set in FILE\n"
           "                          (e.g. the output of atlasvi hvg; same genes as INPUT)\n"
           "  --mask-key K            that var column (default highly_variable)\n"
           "  --target-sum 1e4        counts per cell after normalization\n"
           "  --threads T\n");
}

int av_cmd_pca(int argc, char **argv) {
    AvRunOptions ro;
    av_run_defaults(&ro);
    ro.latent_key = "X_pca";
    AvPcaOptions o = {NULL, 50, NULL, NULL, 1e4};
    const char *input = NULL;
    int bad = 0, missing = 0;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !bad; i++) {
        const char *v, *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (dist_rank() == 0) usage();
            return 0;
        }
        if ((v = av_opt(argc, argv, &i, "--output", &missing)) ||
            (v = av_opt(argc, argv, &i, "-o", &missing)))
            ro.output = v;
        else if (!strcmp(a, "--write-input"))
            ro.inplace = 1;
        else if ((v = av_opt(argc, argv, &i, "--key", &missing)))
            ro.latent_key = v;
        else if ((v = av_opt(argc, argv, &i, "--layer", &missing)))
            o.layer = v;
        else if ((v = av_opt(argc, argv, &i, "--n-comps", &missing)))
            bad = av_parse_int(v, a, 1, 100000, &o.n_comps, err);
        else if ((v = av_opt(argc, argv, &i, "--hvg-from", &missing)))
            o.hvg_from = v;
        else if ((v = av_opt(argc, argv, &i, "--mask-key", &missing)))
            o.mask_key = v;
        else if ((v = av_opt(argc, argv, &i, "--target-sum", &missing)))
            bad = av_parse_double(v, a, 1e-12, 1e15, &o.target_sum, err);
        else if ((v = av_opt(argc, argv, &i, "--threads", &missing)))
            bad = av_parse_int(v, a, 1, 1024, &ro.threads, err);
        else if (missing)
            bad = av_err(err, "option '%s' needs a value", a) != 0;
        else if (a[0] == '-')
            bad = av_err(err, "unknown option '%s'", a) != 0;
        else if (!input)
            input = a;
        else
            bad = av_err(err, "unexpected argument '%s'", a) != 0;
    }
    if (!bad && !input) bad = av_err(err, "need INPUT (see --help)") != 0;
    if (!bad && !ro.output && !ro.inplace)
        bad = av_err(err, "give --output OUT.h5ad or --write-input") != 0;
    if (bad) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        return 1;
    }
    if (av_check_outputs(&ro, input, o.hvg_from, NULL, NULL, err)) return 1;
    if (ro.threads > 0) omp_set_num_threads(ro.threads);
    double t0 = av_now();
    AvPcaResult r;
    if (av_pca_compute(input, &o, &r, err)) return 1;
    if (dist_rank() == 0) {
        double sum = 0;
        for (int c = 0; c < r.k; c++) sum += r.variance_ratio[c];
        fprintf(stderr,
                "atlasvi: pca: %d components of %lld genes (%lld cells, %d rank%s, %.2f s); "
                "variance ratio of PC1 %.4f, of all %.4f\n",
                r.k, (long long)r.n_used, (long long)r.n_obs, dist_size(),
                dist_size() == 1 ? "" : "s", av_now() - t0, r.k ? r.variance_ratio[0] : 0, sum);
    }
    AvOutputSpec out = {input,         o.layer,  ro.output, ro.inplace, r.n_obs, r.n_vars,
                        ro.latent_key, r.scores, r.k,       NULL,       NULL};
    int rc = av_write_results(&out, err);
    if (!rc && dist_rank() == 0)
        fprintf(stderr, "atlasvi: wrote obsm/%s to %s\n", ro.latent_key,
                ro.inplace ? input : ro.output);
    av_pca_result_free(&r);
    return rc ? 1 : 0;
}
