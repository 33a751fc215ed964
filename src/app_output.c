/* Per-cell results gathered to rank 0 and written as .h5ad: a new file beside the
 * input, and/or the input itself when asked (atomically). */
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "io/output.h"
#include "src/app.h"
#include "src/util.h"

float *av_gather_rows(const float *local, int64_t local_rows, int64_t cols, int64_t n_obs) {
    float *all = dist_rank() == 0 ? av_malloc(sizeof(float) * (size_t)(n_obs * cols + 1)) : NULL;
    dist_gather_rows_f32(local, local_rows, cols, all);
    return all;
}

int av_write_results(const AvOutputSpec *o, char *err) {
    int rc = 0;
    if (dist_rank() == 0) {
        if (o->inplace)
            rc = av_write_obsm_inplace(o->input, o->obsm_key, o->obsm, o->n_obs, o->obsm_cols, err);
        if (!rc && o->output) {
            AvInput in = {0};
            rc = av_input_open(&in, o->input, o->layer, err) || av_input_read_names(&in, err);
            AvWriter *w = rc ? NULL : av_writer_create(o->output, &in, err);
            if (!rc && !w) rc = -1;
            if (!rc && o->obsm)
                rc = av_writer_obsm(w, o->obsm_key, o->obsm, o->n_obs, o->obsm_cols, err);
            if (!rc && o->layer_data)
                rc = av_writer_layer(w, o->layer_name, o->layer_data, o->n_obs, o->n_vars, err);
            if (w) {
                if (rc)
                    av_writer_abort(w);
                else
                    rc = av_writer_commit(w, err);
            }
            av_input_close(&in);
        }
    }
    return dist_any_failed(rc, err) ? -1 : 0;
}
