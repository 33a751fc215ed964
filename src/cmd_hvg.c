/* atlasvi hvg: highly variable genes, scanpy's seurat_v3 flavour (src/hvg.h). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "src/cli.h"
#include "src/cmd_common.h"
#include "src/hvg.h"
#include "src/util.h"

static void usage(void) {
    printf("usage: atlasvi hvg INPUT --output OUT.h5ad | --subset OUT.h5ad [options]\n\n");
    printf("Highly variable genes as scanpy's highly_variable_genes(flavor=\"seurat_v3\") on\n"
           "counts: per batch, a loess fit of log10 variance on log10 mean, standardized\n"
           "counts clipped at sqrt(n_cells), normalized variance, median rank over batches.\n\n");
    printf("  --output OUT.h5ad     new .h5ad with obs and var of INPUT and var columns\n"
           "                        highly_variable, highly_variable_rank, means, variances,\n"
           "                        variances_norm (+ highly_variable_nbatches with a key)\n"
           "  --subset OUT.h5ad     new .h5ad with only the highly variable genes of the counts\n"
           "  --layer L             counts in layers/L (default X)\n"
           "  --batch-key K         obs column of batches (ranks combined over batches)\n"
           "  --n-top-genes 2000    number of genes to select\n"
           "  --span 0.3            loess span\n"
           "  --threads T\n");
}

int av_cmd_hvg(int argc, char **argv) {
    const char *input = NULL, *output = NULL, *subset = NULL, *layer = NULL, *key = NULL;
    int n_top = 2000, threads = 0, bad = 0, missing = 0;
    double span = 0.3;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !bad; i++) {
        const char *v, *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (dist_rank() == 0) usage();
            return 0;
        }
        if ((v = av_opt(argc, argv, &i, "--output", &missing)) ||
            (v = av_opt(argc, argv, &i, "-o", &missing)))
            output = v;
        else if ((v = av_opt(argc, argv, &i, "--subset", &missing)))
            subset = v;
        else if ((v = av_opt(argc, argv, &i, "--layer", &missing)))
            layer = v;
        else if ((v = av_opt(argc, argv, &i, "--batch-key", &missing)))
            key = v;
        else if ((v = av_opt(argc, argv, &i, "--n-top-genes", &missing)))
            bad = av_parse_int(v, a, 1, 2147483647, &n_top, err);
        else if ((v = av_opt(argc, argv, &i, "--span", &missing)))
            bad = av_parse_double(v, a, 1e-6, 1e6, &span, err);
        else if ((v = av_opt(argc, argv, &i, "--threads", &missing)))
            bad = av_parse_int(v, a, 1, 1024, &threads, err);
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
    if (!bad && !output && !subset)
        bad = av_err(err, "give --output OUT.h5ad and/or --subset OUT.h5ad") != 0;
    if (bad) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        return 1;
    }
    AvRunOptions ro;
    av_run_defaults(&ro);
    ro.output = output;
    if (av_check_outputs(&ro, input, NULL, NULL, NULL, err)) return 1;
    ro.output = subset;
    if (av_check_outputs(&ro, input, output, NULL, NULL, err)) return 1;
    if (output && subset && !strcmp(output, subset)) {
        if (dist_rank() == 0)
            fprintf(stderr, "atlasvi: error: --output and --subset both name '%s'\n", output);
        return 1;
    }
    if (threads > 0) omp_set_num_threads(threads);
    AvHvgOptions o = {layer, key, n_top, span};
    AvHvgResult r;
    int64_t G = 0;
    double t0 = av_now();
    if (av_hvg_compute(input, &o, &r, &G, NULL, err)) return 1;
    int64_t sel = 0;
    for (int64_t j = 0; j < G; j++) sel += r.highly_variable[j];
    if (dist_rank() == 0)
        fprintf(stderr, "atlasvi: hvg: %lld of %lld genes selected (%d batch%s, %.2f s)\n",
                (long long)sel, (long long)G, r.n_batches_used, r.n_batches_used == 1 ? "" : "es",
                av_now() - t0);
    int rc = av_hvg_write(input, layer, output, subset, &r, G, key != NULL, err);
    if (!rc && dist_rank() == 0) {
        if (output) fprintf(stderr, "atlasvi: wrote var columns to %s\n", output);
        if (subset) fprintf(stderr, "atlasvi: wrote %lld genes to %s\n", (long long)sel, subset);
    }
    av_hvg_result_free(&r);
    return rc ? 1 : 0;
}
