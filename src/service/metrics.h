/* The worker's metrics, printed in the Prometheus text format (GET /v1/metrics). */
#ifndef IMGD_SERVICE_METRICS_H
#define IMGD_SERVICE_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "base/buf.h"

#define IMGD_SVC_METRIC_ROUTES 48
#define IMGD_SVC_METRIC_CODES  24
#define IMGD_SVC_METRIC_MODELS 32
#define IMGD_SVC_LAT_BUCKETS   14

typedef struct imgd_svc_route_stat {
    const char *route;                         /* static pattern */
    uint64_t    by_class[6];                   /* 1xx..5xx responses, index status / 100 */
    uint64_t    buckets[IMGD_SVC_LAT_BUCKETS]; /* cumulative at print time */
    uint64_t    count;
    double      sum_s;
} imgd_svc_route_stat;

typedef struct imgd_svc_metrics {
    pthread_mutex_t     mu;
    imgd_svc_route_stat routes[IMGD_SVC_METRIC_ROUTES];
    size_t              n_routes;
    char                err_codes[IMGD_SVC_METRIC_CODES][48];
    uint64_t            err_counts[IMGD_SVC_METRIC_CODES];
    size_t              n_err;
    char                load_model[IMGD_SVC_METRIC_MODELS][128];
    double              load_s[IMGD_SVC_METRIC_MODELS];
    size_t              n_load;
    uint64_t            steps, images, jobs_done, batches, batched_jobs;
    double              step_s_sum, last_steps_per_s;
    double              start_to_ready_s; /* imgd_start_to_ready_seconds; 0 = not ready yet */
    double              start_download_s; /* of which MODEL_ID downloads */
    double              start_warmup_s;   /* of which the --warmup generation */
} imgd_svc_metrics;

void imgd_svc_metrics_init(imgd_svc_metrics *m);
void imgd_svc_metrics_free(imgd_svc_metrics *m);
void imgd_svc_metrics_request(imgd_svc_metrics *m, const char *route, int32_t status, double s);
/* An error response or failed job, by problem type / error code slug. */
void imgd_svc_metrics_error(imgd_svc_metrics *m, const char *code);
void imgd_svc_metrics_load(imgd_svc_metrics *m, const char *model, double s);
void imgd_svc_metrics_batch(imgd_svc_metrics *m, uint64_t jobs, uint64_t images, uint64_t steps,
                            double sample_s);
/* Appends the Prometheus text; queue gauges come from the caller (jobs per state). */
imgd_status imgd_svc_metrics_print(imgd_svc_metrics *m, imgd_buf *out, const uint64_t jobs[5],
                                   const char *const state_names[5], uint64_t models_loaded,
                                   double uptime_s);

#endif
