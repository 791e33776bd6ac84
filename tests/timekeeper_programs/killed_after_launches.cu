// Launches 100 kernels, waits for them, then dies by SIGKILL, as a worker killed at shutdown does:
// no exit handler runs.
#include <csignal>
#include <cuda_runtime.h>

__global__ void work() {}

int main() {
    for (int i = 0; i < 100; i++) work<<<1, 1>>>();
    cudaDeviceSynchronize();
    raise(SIGKILL);
    return 0;
}
