"""cuDNN's backend API called directly (ctypes, no torch), as cudnn_frontend calls it: a matmul
graph from tensors to execution, and a graph the vGPU library does not charge. Prints one JSON
object of observations for tests/test_vgpu_cudnn.py."""
import ctypes
import json

lib = ctypes.CDLL(None)     # the process's cudnn* symbols: the preloaded vGPU library's
lib.cudnnGetVersion.restype = ctypes.c_size_t
lib.cudnnGetErrorString.restype = ctypes.c_char_p

# cudnnBackendDescriptorType_t, cudnnBackendAttributeType_t and attribute names (cudnn_graph.h)
ENGINECFG, ENGINEHEUR, PLAN, OPERATIONGRAPH, VARIANT_PACK, TENSOR, MATMUL, OP_MATMUL, OP_MOE = 3, 4, 5, 15, 16, 17, 18, 19, 42
T_HANDLE, T_DATA_TYPE, T_BOOLEAN, T_INT64, T_HEUR_MODE, T_DESC, T_VOID_PTR = 0, 1, 2, 3, 8, 15, 6
BF16, FLOAT, HEUR_MODE_A = 9, 0, 3
HEUR_OPERATION_GRAPH, HEUR_MODE, HEUR_RESULTS = 201, 200, 202
PLAN_HANDLE, PLAN_ENGINE_CONFIG, PLAN_WORKSPACE_SIZE = 400, 401, 402
GRAPH_HANDLE, GRAPH_OPS, GRAPH_ENGINE_COUNT = 800, 801, 802
TENSOR_ALIGNMENT, TENSOR_DATA_TYPE, TENSOR_DIMS, TENSOR_STRIDES, TENSOR_UID, TENSOR_VIRTUAL = 900, 901, 902, 903, 906, 907
MATMUL_COMP_TYPE, OP_MATMUL_A, OP_MATMUL_B, OP_MATMUL_C, OP_MATMUL_DESC = 1500, 1520, 1521, 1522, 1523
ENGINE_NUMERICAL_NOTE, ENGINECFG_ENGINE, ENGINE_GLOBAL_INDEX = 1303, 300, 1301
VP_UIDS, VP_POINTERS, VP_WORKSPACE = 1000, 1001, 1003


def check(status, what):
    if status != 0:
        raise SystemExit(f"{what}: {lib.cudnnGetErrorString(status).decode()}")


def create(kind):
    d = ctypes.c_void_p()
    check(lib.cudnnBackendCreateDescriptor(kind, ctypes.byref(d)), f"create {kind}")
    return d


def set_attr(d, name, type_, values, ctype):
    array = (ctype * len(values))(*values)
    check(lib.cudnnBackendSetAttribute(d, name, type_, ctypes.c_int64(len(values)), array), f"set {name}")


def get_int64(d, name):
    value, count = ctypes.c_int64(-1), ctypes.c_int64(-1)
    check(lib.cudnnBackendGetAttribute(d, name, T_INT64, ctypes.c_int64(1), ctypes.byref(count), ctypes.byref(value)),
          f"get {name}")
    return value.value


def tensor(uid, dims, virtual=False):
    t = create(TENSOR)
    strides = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        strides[i] = strides[i + 1] * dims[i + 1]
    set_attr(t, TENSOR_DATA_TYPE, T_DATA_TYPE, [BF16], ctypes.c_int)
    set_attr(t, TENSOR_DIMS, T_INT64, dims, ctypes.c_int64)
    set_attr(t, TENSOR_STRIDES, T_INT64, strides, ctypes.c_int64)
    set_attr(t, TENSOR_UID, T_INT64, [uid], ctypes.c_int64)
    set_attr(t, TENSOR_ALIGNMENT, T_INT64, [16], ctypes.c_int64)
    set_attr(t, TENSOR_VIRTUAL, T_BOOLEAN, [virtual], ctypes.c_bool)
    check(lib.cudnnBackendFinalize(t), "finalize tensor")
    return t


def graph_of(handle, ops):
    g = create(OPERATIONGRAPH)
    set_attr(g, GRAPH_HANDLE, T_HANDLE, [handle.value], ctypes.c_void_p)
    set_attr(g, GRAPH_OPS, T_DESC, [op.value for op in ops], ctypes.c_void_p)
    check(lib.cudnnBackendFinalize(g), "finalize graph")
    return g


def heuristics(graph):
    heur = create(ENGINEHEUR)
    set_attr(heur, HEUR_OPERATION_GRAPH, T_DESC, [graph.value], ctypes.c_void_p)
    set_attr(heur, HEUR_MODE, T_HEUR_MODE, [HEUR_MODE_A], ctypes.c_int)
    check(lib.cudnnBackendFinalize(heur), "finalize heuristics")
    count = ctypes.c_int64(-1)      # the count alone: requested 8, no array (cudnn_frontend asks so)
    check(lib.cudnnBackendGetAttribute(heur, HEUR_RESULTS, T_DESC, ctypes.c_int64(8), ctypes.byref(count), None),
          "count results")
    return heur, count.value


out = {"version": lib.cudnnGetVersion()}
handle = ctypes.c_void_p()
check(lib.cudnnCreate(ctypes.byref(handle)), "cudnnCreate")

# C[1, 64, 32] = A[1, 64, 128] B[1, 128, 32], bf16 with float accumulation.
a, b, c = tensor(1, [1, 64, 128]), tensor(2, [1, 128, 32]), tensor(3, [1, 64, 32])
mm = create(MATMUL)
set_attr(mm, MATMUL_COMP_TYPE, T_DATA_TYPE, [FLOAT], ctypes.c_int)
check(lib.cudnnBackendFinalize(mm), "finalize matmul")
op = create(OP_MATMUL)
for name, t in ((OP_MATMUL_A, a), (OP_MATMUL_B, b), (OP_MATMUL_C, c), (OP_MATMUL_DESC, mm)):
    set_attr(op, name, T_DESC, [t.value], ctypes.c_void_p)
check(lib.cudnnBackendFinalize(op), "finalize matmul operation")
graph = graph_of(handle, [op])
out["engine_count"] = get_int64(graph, GRAPH_ENGINE_COUNT)
heur, out["configs"] = heuristics(graph)
config = create(ENGINECFG)
returned = ctypes.c_int64(-1)
check(lib.cudnnBackendGetAttribute(heur, HEUR_RESULTS, T_DESC, ctypes.c_int64(1), ctypes.byref(returned),
                                   ctypes.byref(config)), "get results")
# A value read back with the wrong type is refused, as cuDNN refuses it.
wrong = ctypes.c_int32()
out["wrong_type_status"] = lib.cudnnBackendGetAttribute(a, TENSOR_UID, 23, ctypes.c_int64(1), None, ctypes.byref(wrong))
notes = ctypes.c_int64(-1)
engine = create(2)
check(lib.cudnnBackendGetAttribute(config, ENGINECFG_ENGINE, T_DESC, ctypes.c_int64(1), None, ctypes.byref(engine)),
      "get engine")
check(lib.cudnnBackendGetAttribute(engine, ENGINE_NUMERICAL_NOTE, 11, ctypes.c_int64(4), ctypes.byref(notes), None),
      "count notes")
out["numerical_notes"], out["engine_index"] = notes.value, get_int64(engine, ENGINE_GLOBAL_INDEX)
plan = create(PLAN)
set_attr(plan, PLAN_HANDLE, T_HANDLE, [handle.value], ctypes.c_void_p)
set_attr(plan, PLAN_ENGINE_CONFIG, T_DESC, [config.value], ctypes.c_void_p)
lib.cudnnBackendDestroyDescriptor(config)       # the plan keeps its own copy
check(lib.cudnnBackendFinalize(plan), "finalize plan")
out["workspace"] = get_int64(plan, PLAN_WORKSPACE_SIZE)
pack = create(VARIANT_PACK)
set_attr(pack, VP_UIDS, T_INT64, [1, 2, 3], ctypes.c_int64)
set_attr(pack, VP_POINTERS, T_VOID_PTR, [0x1000, 0x2000, 0x3000], ctypes.c_void_p)
set_attr(pack, VP_WORKSPACE, T_VOID_PTR, [0], ctypes.c_void_p)
check(lib.cudnnBackendFinalize(pack), "finalize variant pack")
out["execute"] = [lib.cudnnBackendExecute(handle, plan, pack) for _ in range(2)]

# A MoE grouped matmul: a graph the library does not charge gets no engine, and says why.
moe = create(OP_MOE)
check(lib.cudnnBackendFinalize(moe), "finalize moe operation")
moe_graph = graph_of(handle, [moe])
out["moe_engine_count"] = get_int64(moe_graph, GRAPH_ENGINE_COUNT)
_, out["moe_configs"] = heuristics(moe_graph)
check(lib.cudnnDestroy(handle), "cudnnDestroy")
print(json.dumps(out), flush=True)
