/* log.c: how the library speaks. Unimplemented entry points name themselves, once each. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* A small set of messages already printed, so a hot loop calling a missing API prints once. */
#define SEEN_SLOTS 512
static char *seen[SEEN_SLOTS];

static int first_time(const char *message) {
    int fresh = 1;
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < SEEN_SLOTS; i++) {
        if (!seen[i]) { seen[i] = strdup(message); break; }
        if (strcmp(seen[i], message) == 0) { fresh = 0; break; }
    }
    pthread_mutex_unlock(&log_lock);
    return fresh;
}

int vgpu_unimplemented(const char *name, int error_code) {
    if (first_time(name))
        fprintf(stderr, "vgpu: %s is not implemented by the vGPU library (returning error %d)\n",
                name, error_code);
    return error_code;
}

void vgpu_warn_once(const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (first_time(message)) fprintf(stderr, "vgpu: %s\n", message);
}

void vgpu_debug(const char *fmt, ...) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *v = getenv("REVATI_VGPU_LOG");
        enabled = v && *v && strcmp(v, "0") != 0;
    }
    if (!enabled) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vgpu[debug]: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
