/* atlasvi de: scvi-tools' SCVI.differential_expression for a saved model, one-vs-rest or
 * group1 vs group2 for the categories of an obs column, written as CSV by rank 0 (pandas'
 * to_csv layout: gene names as the first, unnamed column). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/replace.h"
#include "src/app_de.h"
#include "src/cli.h"
#include "src/cmd_common.h"
#include "src/de.h"
#include "src/util.h"

typedef struct {
    const char *groupby, *group1, *group2, *output;
    int change, two, batch_correction, threads, n_cred;
    double delta, fdr, pseudocounts, threshold;
    double cred[AV_DE_MAX_CRED];
    int n_samples;
    uint64_t seed;
} DeOptions;

static void usage(void) {
    printf(
        "usage: atlasvi de MODEL.h5 INPUT --groupby KEY --output de.csv [options]\n\n"
        "Differential expression as scvi-tools' SCVI.differential_expression: for each group\n"
        "of obs column KEY (or each of --group1), the cells of the group against the rest\n"
        "(or against --group2). Posterior draws of normalized expression are pooled over\n"
        "ranks; the table does not depend on the number of ranks.\n\n"
        "  --groupby KEY              obs column defining the groups (required)\n"
        "  --group1 A[,B...]          groups to test (default: every category)\n"
        "  --group2 C                 reference group (default: all other cells, 'Rest')\n"
        "  --mode vanilla|change      vanilla (default): P(rho1 > rho2); change: LFC test\n"
        "  --delta 0.25               change mode: |LFC| threshold of the DE region\n"
        "  --fdr-target 0.05          change mode: posterior FDR of is_de_fdr_<target>\n"
        "  --test-mode three|two      change mode: max(up, down) (three) or up + down\n"
        "  --pseudocounts X           change mode: LFC pseudocount (default: estimated)\n"
        "  --threshold-counts 0.01    change mode: mean count under which a gene is unexpressed\n"
        "  --cred-interval-lvls 0.5,0.9   change mode: HPD intervals of the LFC\n"
        "  --batch-correction         decode every cell in each batch category in turn\n"
        "  --n-samples-overall 5000   posterior draws per group\n"
        "  --output de.csv            CSV table (required)\n"
        "  --seed 0  --threads T\n");
}

static int parse(int argc, char **argv, DeOptions *o, const char **pos, char *err) {
    int npos = 0, missing = 0;
    const char *v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int seed = 0, rc = 0;
        if ((v = av_opt(argc, argv, &i, "--groupby", &missing))) {
            o->groupby = v;
        } else if ((v = av_opt(argc, argv, &i, "--group1", &missing))) {
            o->group1 = v;
        } else if ((v = av_opt(argc, argv, &i, "--group2", &missing))) {
            o->group2 = v;
        } else if ((v = av_opt(argc, argv, &i, "--mode", &missing))) {
            if (strcmp(v, "vanilla") && strcmp(v, "change"))
                return av_err(err, "--mode expects vanilla or change, got '%s'", v);
            o->change = !strcmp(v, "change");
        } else if ((v = av_opt(argc, argv, &i, "--test-mode", &missing))) {
            if (strcmp(v, "three") && strcmp(v, "two"))
                return av_err(err, "--test-mode expects three or two, got '%s'", v);
            o->two = !strcmp(v, "two");
        } else if ((v = av_opt(argc, argv, &i, "--delta", &missing))) {
            rc = av_parse_double(v, a, 0, 1e6, &o->delta, err);
        } else if ((v = av_opt(argc, argv, &i, "--fdr-target", &missing))) {
            rc = av_parse_double(v, a, 0, 1, &o->fdr, err);
        } else if ((v = av_opt(argc, argv, &i, "--pseudocounts", &missing))) {
            rc = av_parse_double(v, a, 0, 1e6, &o->pseudocounts, err);
        } else if ((v = av_opt(argc, argv, &i, "--threshold-counts", &missing))) {
            rc = av_parse_double(v, a, 0, 1e12, &o->threshold, err);
        } else if ((v = av_opt(argc, argv, &i, "--cred-interval-lvls", &missing))) {
            o->n_cred = 0;
            for (const char *p = v; *p;) {
                char *end;
                double x = strtod(p, &end);
                if (end == p || !(x > 0 && x < 1) || o->n_cred == AV_DE_MAX_CRED ||
                    (*end && *end != ','))
                    return av_err(err,
                                  "--cred-interval-lvls expects up to %d levels in (0, 1), "
                                  "comma separated, got '%s'",
                                  AV_DE_MAX_CRED, v);
                o->cred[o->n_cred++] = x;
                p = *end ? end + 1 : end;
            }
        } else if (!strcmp(a, "--batch-correction")) {
            o->batch_correction = 1;
        } else if ((v = av_opt(argc, argv, &i, "--n-samples-overall", &missing))) {
            rc = av_parse_int(v, a, 1, 100000000, &o->n_samples, err);
        } else if ((v = av_opt(argc, argv, &i, "--output", &missing)) ||
                   (v = av_opt(argc, argv, &i, "-o", &missing))) {
            o->output = v;
        } else if ((v = av_opt(argc, argv, &i, "--seed", &missing))) {
            rc = av_parse_int(v, a, 0, 2147483647, &seed, err);
            o->seed = (uint64_t)seed;
        } else if ((v = av_opt(argc, argv, &i, "--threads", &missing))) {
            rc = av_parse_int(v, a, 1, 1024, &o->threads, err);
        } else if (missing) {
            return av_err(err, "option '%s' needs a value", a);
        } else if (a[0] == '-') {
            return av_err(err, "unknown option '%s'", a);
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            return av_err(err, "unexpected argument '%s'", a);
        }
        if (rc) return rc;
    }
    if (npos < 2) return av_err(err, "need MODEL.h5 and INPUT (see --help)");
    if (!o->groupby) return av_err(err, "give --groupby KEY (an obs column)");
    if (!o->output) return av_err(err, "give --output de.csv");
    return 0;
}

/* CSV field: quoted when it holds a comma, quote or line break (csv.QUOTE_MINIMAL). */
static void put_str(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void put_num(FILE *f, double x) {
    char b[40];
    if (isnan(x)) return; /* pandas writes NaN as an empty field */
    av_de_format_double(x, b);
    fputs(b, f);
}

/* str(level)[:5] as scvi-tools names the interval columns. */
static void level_name(double x, char *out) {
    char b[40];
    av_de_format_double(x, b);
    b[5] = 0;
    strcpy(out, b);
}

static void write_header(FILE *f, const DeOptions *o) {
    if (!o->change) {
        fputs(",proba_m1,proba_m2,bayes_factor,scale1,scale2", f);
    } else {
        fputs(",proba_de,proba_not_de,bayes_factor,scale1,scale2,pseudocounts,delta,lfc_mean,"
              "lfc_median,lfc_std,lfc_min,lfc_max",
              f);
        for (int c = 0; c < o->n_cred; c++) {
            char l[8];
            level_name(o->cred[c], l);
            fprintf(f, ",lfc_confidence_interval_%s_min,lfc_confidence_interval_%s_max", l, l);
        }
    }
    fputs(",raw_mean1,raw_mean2,non_zeros_proportion1,non_zeros_proportion2,"
          "raw_normalized_mean1,raw_normalized_mean2",
          f);
    if (o->change) {
        char t[40];
        av_de_format_double(o->fdr, t);
        fprintf(f, ",is_de_fdr_%s", t);
    }
    fputs(",comparison,group1,group2\n", f);
}

/* One comparison's table: every column per gene. */
typedef struct {
    double *col[32];
    int n_col;
    double *ci_lo, *ci_hi;
    uint8_t *fdr;
} Table;

static double *new_col(Table *t, int64_t G) {
    return t->col[t->n_col++] = av_calloc((size_t)(G + 1), sizeof(double));
}

static void free_table(Table *t) {
    for (int k = 0; k < t->n_col; k++) free(t->col[k]);
    free(t->ci_lo);
    free(t->ci_hi);
    free(t->fdr);
}

/* Collective: one comparison, written by rank 0. */
static void compare(AvScvi *m, const AvTrainData *d, const DeOptions *o, char **genes,
                    const uint8_t *mem1, int64_t n1, const uint8_t *mem2, int64_t n2, uint32_t key,
                    const char *g1, const char *g2, FILE *f) {
    int64_t G = m->cfg.n_input, M1 = 0, M2 = 0;
    AvDeSampling ds = {o->n_samples, o->batch_correction, o->seed, 128};
    float *s1 = av_de_sample_rho(m, d, mem1, n1, &ds, 2 * key, &M1, NULL);
    float *s2 = av_de_sample_rho(m, d, mem2, n2, &ds, 2 * key + 1, &M2, NULL);
    Table t = {0};
    double *raw[6];
    for (int k = 0; k < 6; k++) raw[k] = av_calloc((size_t)(G + 1), sizeof(double));
    av_de_raw_stats(d, mem1, n1, raw[0], raw[2], raw[4]);
    av_de_raw_stats(d, mem2, n2, raw[1], raw[3], raw[5]);
    double *key_col;
    if (!o->change) {
        double *p1 = new_col(&t, G), *p2 = new_col(&t, G), *bf = new_col(&t, G);
        av_de_vanilla(s1, s2, M1, G, p1, p2, bf);
        key_col = bf;
        av_de_col_means(s1, M1, G, new_col(&t, G));
        av_de_col_means(s2, M2, G, new_col(&t, G));
    } else {
        double pc = o->pseudocounts >= 0
                        ? o->pseudocounts
                        : av_de_pseudocount(s1, M1, s2, M2, G, raw[0], raw[1], o->threshold, 0.9);
        AvDeChange c;
        c.proba_de = new_col(&t, G);
        c.proba_not_de = new_col(&t, G);
        c.bayes_factor = new_col(&t, G);
        av_de_col_means(s1, M1, G, new_col(&t, G));
        av_de_col_means(s2, M2, G, new_col(&t, G));
        double *pcs = new_col(&t, G), *dl = new_col(&t, G);
        for (int64_t g = 0; g < G; g++) pcs[g] = pc, dl[g] = o->delta;
        c.lfc_mean = new_col(&t, G);
        c.lfc_median = new_col(&t, G);
        c.lfc_std = new_col(&t, G);
        c.lfc_min = new_col(&t, G);
        c.lfc_max = new_col(&t, G);
        t.ci_lo = av_calloc((size_t)(o->n_cred * G + 1), sizeof(double));
        t.ci_hi = av_calloc((size_t)(o->n_cred * G + 1), sizeof(double));
        c.ci_lo = t.ci_lo;
        c.ci_hi = t.ci_hi;
        av_de_change(s1, s2, M1 < M2 ? M1 : M2, G, pc, o->delta, o->two, o->n_cred, o->cred, &c);
        key_col = c.proba_de;
        t.fdr = av_malloc((size_t)(G + 1));
        av_de_fdr_flags(c.proba_de, G, o->fdr, t.fdr);
    }
    if (dist_rank() == 0) {
        int64_t *order = av_malloc(sizeof(int64_t) * (size_t)(G + 1));
        av_de_order_desc(key_col, G, order);
        char cmp[1024];
        snprintf(cmp, sizeof cmp, "%s vs %s", g1, g2);
        for (int64_t r = 0; r < G; r++) {
            int64_t g = order[r];
            put_str(f, genes[g]);
            for (int k = 0; k < t.n_col; k++) fputc(',', f), put_num(f, t.col[k][g]);
            for (int c = 0; o->change && c < o->n_cred; c++) {
                fputc(',', f), put_num(f, t.ci_lo[c * G + g]);
                fputc(',', f), put_num(f, t.ci_hi[c * G + g]);
            }
            for (int k = 0; k < 6; k++) fputc(',', f), put_num(f, raw[k][g]);
            if (o->change) fputs(t.fdr[g] ? ",True" : ",False", f);
            fputc(',', f), put_str(f, cmp);
            fputc(',', f), put_str(f, g1);
            fputc(',', f), put_str(f, g2);
            fputc('\n', f);
        }
        free(order);
    }
    for (int k = 0; k < 6; k++) free(raw[k]);
    free_table(&t);
    free(s1);
    free(s2);
}

static int find_cat(char **cats, int64_t n, const char *name) {
    for (int64_t k = 0; k < n; k++)
        if (!strcmp(cats[k], name)) return (int)k;
    return -1;
}

int av_cmd_de(int argc, char **argv) {
    DeOptions o = {0};
    o.delta = 0.25;
    o.fdr = 0.05;
    o.pseudocounts = -1;
    o.threshold = 0.01;
    o.n_samples = 5000;
    const char *pos[2] = {NULL, NULL};
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (dist_rank() == 0) usage();
            return 0;
        }
    if (parse(argc, argv, &o, pos, err)) {
        if (dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        return 1;
    }
    AvRunOptions ro;
    av_run_defaults(&ro);
    ro.output = o.output;
    if (av_check_outputs(&ro, pos[1], pos[0], NULL, NULL, err)) return 1;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    AvScvi m = {0};
    AvSetup saved = {0}, s = {0};
    AvTrainData d = {0};
    int32_t *codes = NULL;
    int n_g1 = 0, *g1 = NULL, g2 = -1;
    char **cats = NULL;
    int64_t n_cats = 0;
    int rc = av_model_load(pos[0], &m, &saved, NULL, NULL, 128, err);
    if (dist_any_failed(rc, err)) return 1;
    m.g.seed = o.seed;
    av_setup_copy_keys(&s, &saved);
    rc = av_setup_load(&s, pos[1], &saved, &d, err);
    if (rc) goto done; /* already agreed and printed */
    rc = av_de_read_groups(pos[1], s.layer, o.groupby, d.n_obs, &codes, &cats, &n_cats, err);
    if (rc) goto done;
    /* the comparisons: group1 categories, group2 category or the rest */
    {
        int bad = 0;
        g1 = av_malloc(sizeof(int) * (size_t)(n_cats + 1));
        if (o.group2 && (g2 = find_cat(cats, n_cats, o.group2)) < 0)
            bad = av_err(err, "--group2 '%s' is not a category of obs column '%s'", o.group2,
                         o.groupby);
        if (!bad && o.group1) {
            for (const char *p = o.group1; *p && !bad;) {
                const char *q = strchr(p, ',');
                size_t len = q ? (size_t)(q - p) : strlen(p);
                char name[512];
                snprintf(name, sizeof name, "%.*s", (int)(len < 511 ? len : 511), p);
                int k = find_cat(cats, n_cats, name);
                if (k < 0)
                    bad = av_err(err, "--group1 '%s' is not a category of obs column '%s'", name,
                                 o.groupby);
                else
                    g1[n_g1++] = k;
                p += len + (q ? 1 : 0);
            }
        } else if (!bad) {
            if (n_cats < 2)
                bad = av_err(err, "obs column '%s' has a single group: no DE to run", o.groupby);
            for (int k = 0; k < n_cats; k++) g1[n_g1++] = k;
        }
        rc = bad ? -1 : 0;
    }
    if (dist_any_failed(rc, err)) goto done;
    {
        int64_t N = d.n_obs, G = m.cfg.n_input;
        uint8_t *mem1 = av_malloc((size_t)N + 1), *mem2 = av_malloc((size_t)N + 1);
        int64_t *count = av_calloc((size_t)(n_cats + 1), sizeof(int64_t));
        for (int64_t c = 0; c < N; c++)
            if (codes[c] >= 0) count[codes[c]]++;
        FILE *f = NULL;
        AvReplace out = {0};
        int wrc = 0;
        if (dist_rank() == 0) {
            wrc = av_replace_begin(&out, o.output, err);
            f = wrc ? NULL : fopen(out.tmp, "w");
            if (!wrc && !f) {
                wrc = av_err(err, "cannot write '%s'", out.tmp);
                av_replace_abort(&out);
            }
            if (f) write_header(f, &o);
        }
        if (dist_any_failed(wrc, err)) {
            rc = -1;
            free(mem1), free(mem2), free(count);
            goto done;
        }
        for (int j = 0; j < n_g1 && !rc; j++) {
            int k = g1[j];
            int64_t n1 = 0, n2 = 0;
            for (int64_t c = 0; c < N; c++) {
                mem1[c] = codes[c] == k;
                mem2[c] = g2 >= 0 ? codes[c] == g2 : codes[c] != k;
                n1 += mem1[c];
                n2 += mem2[c];
            }
            if (n1 == 0 || n2 == 0) {
                if (o.group1 || o.group2) {
                    rc = av_err(err, "group '%s' of '%s' has no cells", n1 ? cats[g2] : cats[k],
                                o.groupby);
                    break;
                }
                if (dist_rank() == 0)
                    fprintf(stderr, "atlasvi: warning: '%s' has no cells in obs '%s'; skipped\n",
                            n1 ? "Rest" : cats[k], o.groupby);
                continue;
            }
            if (dist_rank() == 0)
                fprintf(stderr, "atlasvi: DE %s vs %s (%lld vs %lld cells, %lld genes)\n", cats[k],
                        g2 >= 0 ? cats[g2] : "Rest", (long long)n1, (long long)n2, (long long)G);
            compare(&m, &d, &o, s.var_names, mem1, n1, mem2, n2, (uint32_t)k, cats[k],
                    g2 >= 0 ? cats[g2] : "Rest", f);
        }
        if (dist_rank() == 0) {
            int bad = ferror(f);
            if ((fclose(f) || bad) && !rc)
                rc = av_err(err, "%s: writing failed (disk full?)", o.output);
            if (rc)
                av_replace_abort(&out);
            else
                rc = av_replace_commit(&out, err);
            if (!rc) fprintf(stderr, "atlasvi: wrote %s\n", o.output);
        }
        rc = dist_any_failed(rc, err) ? -1 : 0;
        free(mem1);
        free(mem2);
        free(count);
    }
done:
    free(g1);
    free(codes);
    av_free_strings(cats, n_cats);
    av_train_data_free(&d);
    av_setup_free(&s);
    av_setup_free(&saved);
    av_scvi_free(&m);
    return rc ? 1 : 0;
}
