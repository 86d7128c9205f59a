/* imgd resolve: what a MODEL_ID names and what `imgd serve --model-id` would serve (pulling it
 * when needed, finding an adapter's base). Uses only the public header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imgd.h"

#define RESOLVE_DIRS_MAX 64

static const char k_usage[] =
    "imgd resolve MODEL_ID [--models DIR...] [--state DIR] [--download-dir DIR]";

const char *imgd_cli_resolve_usage(void) {
    return k_usage;
}

int imgd_cli_resolve(int argc, char **argv) {
    const char *id = NULL, *state = NULL, *dl = NULL;
    const char *dirs[RESOLVE_DIRS_MAX];
    size_t      n_dirs = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--models") == 0) {
            int j = i + 1;
            for (; j < argc && argv[j][0] != '-' && n_dirs < RESOLVE_DIRS_MAX; j++) {
                dirs[n_dirs++] = argv[j];
            }
            if (j == i + 1) {
                fprintf(stderr, "imgd resolve: --models needs a folder\nusage: %s\n", k_usage);
                return 2;
            }
            i = j - 1;
        } else if ((strcmp(a, "--state") == 0 || strcmp(a, "--download-dir") == 0) &&
                   i + 1 < argc) {
            *(strcmp(a, "--state") == 0 ? &state : &dl) = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "imgd resolve: unknown option '%s'\nusage: %s\n", a, k_usage);
            return 2;
        } else if (!id) {
            id = a;
        } else {
            fprintf(stderr, "imgd resolve: one MODEL_ID only ('%s' is extra)\n", a);
            return 2;
        }
    }
    if (!id) id = getenv("MODEL_ID");
    if (!id || !*id) {
        fprintf(stderr, "imgd resolve: give a MODEL_ID (or set MODEL_ID)\nusage: %s\n", k_usage);
        return 2;
    }
    char       *report = NULL;
    imgd_status st     = imgd_model_id_resolve(id, state, dl, dirs, n_dirs, &report);
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd resolve: %s\n", imgd_last_error());
        return 1;
    }
    printf("%s\n", report);
    imgd_string_free(report);
    return 0;
}
