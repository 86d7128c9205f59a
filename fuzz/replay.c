/* Runs LLVMFuzzerTestOneInput over every file of the given directories (or files), so
 * the seed corpus is replayed by ctest under any compiler and sanitizer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    size_t   cap = 1 << 16, n = 0;
    uint8_t *buf = imgd_malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = imgd_realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    (void)fclose(f); /* opened for reading: nothing to lose */
    LLVMFuzzerTestOneInput(buf, n);
    imgd_free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int files = 0, errors = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "missing corpus %s\n", argv[i]);
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += run_file(argv[i]);
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            imgd_fmt(p, sizeof p, "%s/%s", argv[i], e->d_name);
            errors += run_file(p);
            files++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", files);
    printf("%d passed, %d failed\n", files - errors, errors);
    return errors ? 1 : 0;
}
