#include "service/metrics.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const double k_buckets[IMGD_SVC_LAT_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                       1,     2.5,  5,     10,   30,  60,   300};

void imgd_svc_metrics_init(imgd_svc_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void imgd_svc_metrics_free(imgd_svc_metrics *m) {
    pthread_mutex_destroy(&m->mu);
}

void imgd_svc_metrics_request(imgd_svc_metrics *m, const char *route, int32_t status, double s) {
    pthread_mutex_lock(&m->mu);
    imgd_svc_route_stat *r = NULL;
    for (size_t i = 0; i < m->n_routes && !r; i++) {
        if (strcmp(m->routes[i].route, route) == 0) r = &m->routes[i];
    }
    if (!r && m->n_routes < IMGD_SVC_METRIC_ROUTES) {
        r        = &m->routes[m->n_routes++];
        r->route = route;
    }
    if (r) {
        int cls = status / 100;
        if (cls < 1 || cls > 5) cls = 5;
        r->by_class[cls]++;
        r->count++;
        r->sum_s += s;
        for (int b = 0; b < IMGD_SVC_LAT_BUCKETS; b++) {
            if (s <= k_buckets[b]) {
                r->buckets[b]++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void imgd_svc_metrics_error(imgd_svc_metrics *m, const char *code) {
    pthread_mutex_lock(&m->mu);
    size_t i = 0;
    while (i < m->n_err && strcmp(m->err_codes[i], code) != 0) i++;
    if (i == m->n_err && m->n_err < IMGD_SVC_METRIC_CODES) {
        (void)snprintf(m->err_codes[i], sizeof m->err_codes[i], "%s", code);
        m->n_err++;
    }
    if (i < m->n_err) m->err_counts[i]++;
    pthread_mutex_unlock(&m->mu);
}

void imgd_svc_metrics_load(imgd_svc_metrics *m, const char *model, double s) {
    pthread_mutex_lock(&m->mu);
    size_t i = 0;
    while (i < m->n_load && strcmp(m->load_model[i], model) != 0) i++;
    if (i == m->n_load && m->n_load < IMGD_SVC_METRIC_MODELS) {
        (void)snprintf(m->load_model[i], sizeof m->load_model[i], "%s", model);
        m->n_load++;
    }
    if (i < m->n_load) m->load_s[i] = s;
    pthread_mutex_unlock(&m->mu);
}

void imgd_svc_metrics_batch(imgd_svc_metrics *m, uint64_t jobs, uint64_t images, uint64_t steps,
                            double sample_s) {
    pthread_mutex_lock(&m->mu);
    m->batches++;
    m->batched_jobs += jobs;
    m->jobs_done += jobs;
    m->images += images;
    m->steps += steps;
    m->step_s_sum += sample_s;
    if (sample_s > 0) m->last_steps_per_s = (double)steps / sample_s;
    pthread_mutex_unlock(&m->mu);
}

/* Label values here are route patterns, model ids and slugs: escape \ " and newlines. */
static imgd_status label(imgd_buf *b, const char *v) {
    for (const char *p = v; *p; p++) {
        imgd_status st;
        if (*p == '\\' || *p == '"') {
            char e[3] = {'\\', *p, 0};
            st        = imgd_buf_puts(b, e);
        } else if (*p == '\n') {
            st = imgd_buf_puts(b, "\\n");
        } else {
            st = imgd_buf_append(b, p, 1);
        }
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, res = 0;
    int           n = fscanf(f, "%lu %lu", &size, &res);
    (void)fclose(f);
    if (n != 2) return 0;
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static imgd_status print_routes(imgd_svc_metrics *m, imgd_buf *b) {
    imgd_status st = imgd_buf_puts(
        b, "# HELP imgd_http_requests_total HTTP requests by route and status class.\n"
           "# TYPE imgd_http_requests_total counter\n");
    for (size_t i = 0; st == IMGD_OK && i < m->n_routes; i++) {
        for (int c = 1; c <= 5 && st == IMGD_OK; c++) {
            if (!m->routes[i].by_class[c]) continue;
            st = imgd_buf_puts(b, "imgd_http_requests_total{route=\"");
            if (st == IMGD_OK) st = label(b, m->routes[i].route);
            if (st == IMGD_OK)
                st = imgd_buf_printf(b, "\",code=\"%dxx\"} %llu\n", c,
                                     (unsigned long long)m->routes[i].by_class[c]);
        }
    }
    if (st == IMGD_OK)
        st = imgd_buf_puts(b, "# HELP imgd_http_request_duration_seconds Request latency.\n"
                              "# TYPE imgd_http_request_duration_seconds histogram\n");
    for (size_t i = 0; st == IMGD_OK && i < m->n_routes; i++) {
        const imgd_svc_route_stat *r   = &m->routes[i];
        uint64_t                   cum = 0;
        for (int k = 0; k <= IMGD_SVC_LAT_BUCKETS && st == IMGD_OK; k++) {
            st = imgd_buf_puts(b, "imgd_http_request_duration_seconds_bucket{route=\"");
            if (st == IMGD_OK) st = label(b, r->route);
            if (k < IMGD_SVC_LAT_BUCKETS) {
                cum += r->buckets[k];
                if (st == IMGD_OK)
                    st = imgd_buf_printf(b, "\",le=\"%g\"} %llu\n", k_buckets[k],
                                         (unsigned long long)cum);
            } else if (st == IMGD_OK) {
                st = imgd_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)r->count);
            }
        }
        if (st == IMGD_OK) st = imgd_buf_puts(b, "imgd_http_request_duration_seconds_sum{route=\"");
        if (st == IMGD_OK) st = label(b, r->route);
        if (st == IMGD_OK) st = imgd_buf_printf(b, "\"} %.6f\n", r->sum_s);
        if (st == IMGD_OK)
            st = imgd_buf_puts(b, "imgd_http_request_duration_seconds_count{route=\"");
        if (st == IMGD_OK) st = label(b, r->route);
        if (st == IMGD_OK) st = imgd_buf_printf(b, "\"} %llu\n", (unsigned long long)r->count);
    }
    return st;
}

imgd_status imgd_svc_metrics_print(imgd_svc_metrics *m, imgd_buf *b, const uint64_t jobs[5],
                                   const char *const state_names[5], uint64_t models_loaded,
                                   double uptime_s) {
    pthread_mutex_lock(&m->mu);
    imgd_status st = print_routes(m, b);
    if (st == IMGD_OK)
        st = imgd_buf_puts(b, "# HELP imgd_errors_total Error responses and failed jobs by "
                              "problem type.\n# TYPE imgd_errors_total counter\n");
    for (size_t i = 0; st == IMGD_OK && i < m->n_err; i++) {
        st = imgd_buf_puts(b, "imgd_errors_total{code=\"");
        if (st == IMGD_OK) st = label(b, m->err_codes[i]);
        if (st == IMGD_OK)
            st = imgd_buf_printf(b, "\"} %llu\n", (unsigned long long)m->err_counts[i]);
    }
    if (st == IMGD_OK)
        st = imgd_buf_puts(b, "# HELP imgd_model_load_seconds Time the last load of a model "
                              "took.\n# TYPE imgd_model_load_seconds gauge\n");
    for (size_t i = 0; st == IMGD_OK && i < m->n_load; i++) {
        st = imgd_buf_puts(b, "imgd_model_load_seconds{model=\"");
        if (st == IMGD_OK) st = label(b, m->load_model[i]);
        if (st == IMGD_OK) st = imgd_buf_printf(b, "\"} %.6f\n", m->load_s[i]);
    }
    if (st == IMGD_OK)
        st = imgd_buf_puts(b, "# HELP imgd_jobs Jobs in the store by state.\n"
                              "# TYPE imgd_jobs gauge\n");
    for (int i = 0; st == IMGD_OK && i < 5; i++)
        st = imgd_buf_printf(b, "imgd_jobs{state=\"%s\"} %llu\n", state_names[i],
                             (unsigned long long)jobs[i]);
    if (st == IMGD_OK)
        st = imgd_buf_printf(
            b,
            "# HELP imgd_queue_depth Jobs waiting to run.\n# TYPE imgd_queue_depth gauge\n"
            "imgd_queue_depth %llu\n"
            "# HELP imgd_steps_total Sampler steps run.\n# TYPE imgd_steps_total counter\n"
            "imgd_steps_total %llu\n"
            "# HELP imgd_sampling_seconds_total Time spent sampling.\n"
            "# TYPE imgd_sampling_seconds_total counter\nimgd_sampling_seconds_total %.6f\n"
            "# HELP imgd_steps_per_second Steps per second of the last batch.\n"
            "# TYPE imgd_steps_per_second gauge\nimgd_steps_per_second %.6f\n"
            "# HELP imgd_images_total Images generated.\n# TYPE imgd_images_total counter\n"
            "imgd_images_total %llu\n"
            "# HELP imgd_batches_total Sampling loops run (each may serve several jobs).\n"
            "# TYPE imgd_batches_total counter\nimgd_batches_total %llu\n"
            "# HELP imgd_batched_jobs_total Jobs run inside those loops.\n"
            "# TYPE imgd_batched_jobs_total counter\nimgd_batched_jobs_total %llu\n"
            "# HELP imgd_models_loaded Models in memory.\n# TYPE imgd_models_loaded gauge\n"
            "imgd_models_loaded %llu\n"
            "# HELP imgd_memory_rss_bytes Resident memory of the worker.\n"
            "# TYPE imgd_memory_rss_bytes gauge\nimgd_memory_rss_bytes %.0f\n"
            "# HELP imgd_uptime_seconds Seconds since the worker started.\n"
            "# TYPE imgd_uptime_seconds gauge\nimgd_uptime_seconds %.3f\n",
            (unsigned long long)jobs[0], (unsigned long long)m->steps, m->step_s_sum,
            m->last_steps_per_s, (unsigned long long)m->images, (unsigned long long)m->batches,
            (unsigned long long)m->batched_jobs, (unsigned long long)models_loaded, rss_bytes(),
            uptime_s);
    if (st == IMGD_OK && m->start_to_ready_s > 0) {
        st = imgd_buf_printf(
            b,
            "# HELP imgd_start_to_ready_seconds Seconds from the start of imgd_server_start to "
            "ready (model resolved, loaded and warmed up; downloads included).\n"
            "# TYPE imgd_start_to_ready_seconds gauge\nimgd_start_to_ready_seconds %.6f\n"
            "# HELP imgd_start_download_seconds Seconds of that start spent downloading the "
            "model (MODEL_ID from a hub).\n"
            "# TYPE imgd_start_download_seconds gauge\nimgd_start_download_seconds %.6f\n"
            "# HELP imgd_start_warmup_seconds Seconds of that start spent on the warm-up "
            "generation (--warmup).\n"
            "# TYPE imgd_start_warmup_seconds gauge\nimgd_start_warmup_seconds %.6f\n",
            m->start_to_ready_s, m->start_download_s, m->start_warmup_s);
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}
