/* Option parsing and the end of a run, shared by train, latent and normalize. */
#ifndef AV_CMD_COMMON_H
#define AV_CMD_COMMON_H
#include <stdint.h>

#include "src/app.h"

/* Outputs and run settings common to the subcommands. */
typedef struct {
    const char *output; /* new .h5ad */
    int inplace;        /* write obsm into the input */
    const char *latent_key;
    const char *model_out;
    uint64_t seed;
    int threads;
    const char *normalized_layer; /* also write normalized expression to this layer */
    float library_size;
    int n_samples;
    const char *transform_batch; /* a batch category, or NULL */
} AvRunOptions;

/* The long options a command line gave (arg as written, "--name" or "--name=value"; the
 * value, NULL for a flag), for train --resume. */
#define AV_MAX_GIVEN 256
typedef struct {
    int n;
    const char *arg[AV_MAX_GIVEN];
    const char *value[AV_MAX_GIVEN];
} AvGivenOptions;
void av_given_add(AvGivenOptions *g, const char *arg, const char *value);
/* --resume: each given model or registry option (--n-latent, --gene-likelihood,
 * --batch-key, ...) whose value differs from the model's is named with both values in
 * one error. */
int av_resume_check(const char *model_path, const AvGivenOptions *g, const AvScviConfig *given_cfg,
                    const AvSetup *given_setup, const AvScviConfig *model_cfg,
                    const AvSetup *model_setup, char *err);
/* The training options given for a resumed run ("--max-epochs 5, --lr 0.0005 (the model:
 * 0.001, now 0.0005)"), or "none"; written into buf. */
const char *av_resume_changes(const AvGivenOptions *g, float model_lr, float lr, char *buf,
                              size_t n);

void av_run_defaults(AvRunOptions *r);

/* Each returns 1 when argv[*i] was its option (advancing *i past a value), 0 otherwise;
 * on a bad or missing value they return 1 and fill err. */
int av_parse_setup_option(int argc, char **argv, int *i, AvSetup *s, AvScviConfig *c, char *err);
int av_parse_model_option(int argc, char **argv, int *i, AvScviConfig *c, char *err);
int av_parse_run_option(int argc, char **argv, int *i, AvRunOptions *r, char *err);

int av_parse_int(const char *v, const char *name, long lo, long hi, int *out, char *err);
int av_parse_float(const char *v, const char *name, double lo, double hi, float *out, char *err);
int av_parse_double(const char *v, const char *name, double lo, double hi, double *out, char *err);

/* Collective, before any work: each file to write (--output, --model-out, --metrics other
 * than '-', --checkpoint; NULLs skipped) must be in an existing, writable folder and must
 * not be the input, the model file being read (only --model-out/--checkpoint may replace
 * it) or another output; --write-input needs a writable input. Rank 0 checks; the
 * message is printed once. */
int av_check_outputs(const AvRunOptions *r, const char *input, const char *model_in,
                     const char *metrics, const char *checkpoint, char *err);

/* Collective: latent (and normalized expression when asked) gathered to rank 0 and
 * written, then the model file saved. */
int av_finish_run(const AvRunOptions *r, const char *input, const AvSetup *s, AvScvi *m,
                  const AvTrainData *d, const AvOptState *st, const AvHistory *h, char *err);

/* latent (normalize = 0) and normalize (1): apply a saved model to a file. */
int av_cmd_apply(int argc, char **argv, int normalize);

#endif
