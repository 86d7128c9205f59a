#include <stdio.h>

#include "imgd.h"

int main(void) {
    printf("imgd %s\n", imgd_version());
    return 0;
}
