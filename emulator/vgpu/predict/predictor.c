/* predictor.c: the predictor interface and its registry.
 *
 * A predictor maps a launch descriptor to seconds on the target SKU. REVATI_PREDICTOR picks one
 * by name ("name" or "name:argument"). Registered here:
 *   profiled -- measured on the real GPU (predictor_profiled.c); its argument is the model file.
 *   fixed  -- a TEST DOUBLE: fixed durations per launch kind and kernel name, read from the file
 *             given as its argument (lines "<kind> <name|*> <seconds>", kind one of kernel, gemm,
 *             collective, copy, memset, attention). It stands behind the interface until the profiled
 *             predictor exists, and stays for tests that need exact, hand-checkable timelines.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

typedef struct predictor {
    const char *name;
    void (*init)(const char *argument);
    double (*predict)(const vgpu_launch *launch);
    /* host_scale: the target host's speed now against when its host work was measured */
    double (*predict_host)(vgpu_host_work work, double host_scale);
} predictor;

/* ---- fixed: the test double ---------------------------------------------------------- */

typedef struct fixed_rule { vgpu_op_kind kind; char *name; double seconds; } fixed_rule;
static fixed_rule *fixed_rules;
static size_t fixed_len;
/* Used when no rule matches (and when no file is given): round, recognisable numbers. */
static double fixed_default[VGPU_OP_KIND_COUNT] = {
    [VGPU_OP_KERNEL] = 5e-6, [VGPU_OP_GEMM] = 20e-6, [VGPU_OP_COLLECTIVE] = 30e-6,
    [VGPU_OP_COPY] = 2e-6, [VGPU_OP_MEMSET] = 2e-6, [VGPU_OP_ATTENTION] = 10e-6,
};

static int kind_from_name(const char *s) {
    for (int k = 0; k < VGPU_OP_KIND_COUNT; k++)
        if (vgpu_op_kind_name(k) && strcmp(vgpu_op_kind_name(k), s) == 0) return k;
    return -1;
}

static void fixed_init(const char *path) {
    if (!path || !*path) return;
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "vgpu: fixed predictor: cannot open %s\n", path); exit(86); }
    char line[1024], kind[32], name[900];
    double seconds;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%31s %899s %lf", kind, name, &seconds) != 3) continue;
        int k = kind_from_name(kind);
        if (k < 0) { fprintf(stderr, "vgpu: fixed predictor: unknown kind '%s' in %s\n", kind, path); exit(86); }
        if (strcmp(name, "*") == 0) { fixed_default[k] = seconds; continue; }
        fixed_rules = realloc(fixed_rules, (fixed_len + 1) * sizeof *fixed_rules);
        fixed_rules[fixed_len++] = (fixed_rule){k, strdup(name), seconds};
    }
    fclose(f);
}

/* Host work is charged only from measurements: the test double has none. */
static double fixed_predict_host(vgpu_host_work work, double host_scale) {
    (void)work;
    (void)host_scale;
    return 0;
}

static double fixed_predict(const vgpu_launch *l) {
    for (size_t i = 0; i < fixed_len; i++)
        if (fixed_rules[i].kind == l->kind && l->name && strcmp(fixed_rules[i].name, l->name) == 0)
            return fixed_rules[i].seconds;
    return fixed_default[l->kind];
}

/* ---- registry ----------------------------------------------------------------------- */

static const predictor predictors[] = {
    {"fixed", fixed_init, fixed_predict, fixed_predict_host},
    {"profiled", vgpu_profiled_init, vgpu_profiled_predict, vgpu_profiled_predict_host},
};

static const predictor *active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;
/* The target host's speed during the run against when its host costs were measured
 * (REVATI_HOST_WORK_SCALE, from emulator/host_cpu.py's figures): host work scales with it. */
static double host_work_scale = 1.0;

static void choose(void) {
    const char *spec = getenv("REVATI_PREDICTOR");
    char name[64] = "fixed";
    const char *argument = "";
    if (spec && *spec) {
        const char *colon = strchr(spec, ':');
        size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
        snprintf(name, sizeof name, "%.*s", (int)n, spec);
        argument = colon ? colon + 1 : "";
    }
    for (size_t i = 0; i < sizeof predictors / sizeof *predictors; i++)
        if (strcmp(predictors[i].name, name) == 0) active = &predictors[i];
    if (!active) { fprintf(stderr, "vgpu: REVATI_PREDICTOR names unknown predictor '%s'\n", name); exit(86); }
    const char *scale = getenv("REVATI_HOST_WORK_SCALE");
    if (scale && *scale) {
        char *end;
        host_work_scale = strtod(scale, &end);
        if (*end || !(host_work_scale > 0)) {
            fprintf(stderr, "vgpu: REVATI_HOST_WORK_SCALE must be a positive number, got '%s'\n", scale);
            exit(86);
        }
    }
    active->init(argument);
}

double vgpu_predict(const vgpu_launch *launch) {
    if (launch->kind == VGPU_OP_GRAPH) return launch->u.graph.seconds;
    if (launch->kind == VGPU_OP_HOST_FN || launch->kind == VGPU_OP_EVENT_RECORD) return 0;
    pthread_once(&active_once, choose);
    return active->predict(launch);
}

double vgpu_predict_host(vgpu_host_work work) {
    pthread_once(&active_once, choose);
    return active->predict_host(work, host_work_scale);
}
