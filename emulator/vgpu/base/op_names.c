/* op_names.c: what the launch descriptor's kinds and the host work items are called, in the
 * predictor's model files (which name host work by these strings) and in the stats trace. Below
 * both the predictor and the stats, which each need the names without needing the other. */
#include "vgpu.h"

static const char *kind_names[VGPU_OP_KIND_COUNT] = {
    [VGPU_OP_KERNEL] = "kernel", [VGPU_OP_GEMM] = "gemm", [VGPU_OP_COLLECTIVE] = "collective",
    [VGPU_OP_COPY] = "copy", [VGPU_OP_MEMSET] = "memset", [VGPU_OP_GRAPH] = "graph",
    [VGPU_OP_HOST_FN] = "host_fn", [VGPU_OP_EVENT_RECORD] = "event_record", [VGPU_OP_ATTENTION] = "attention",
    [VGPU_OP_HOST_WORK] = "host_work",
};

static const char *host_work_names[VGPU_HOST_WORK_COUNT] = {
    [VGPU_HOST_CUDNN_ATTENTION_FIRST] = "cudnn_attention_graph_first",
    [VGPU_HOST_CUDNN_ATTENTION] = "cudnn_attention_graph",
    [VGPU_HOST_LAUNCH] = "launch",
};

const char *vgpu_op_kind_name(vgpu_op_kind kind) { return kind_names[kind]; }

const char *vgpu_host_work_name(vgpu_host_work work) { return host_work_names[work]; }
