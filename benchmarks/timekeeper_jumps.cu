// An actor that only waits: ITERATIONS times, launch one kernel (the benchmark charges it) and
// synchronise, which is one time jump granted by the Timekeeper.
// usage: timekeeper_jumps ITERATIONS
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void step(float *x) {}

int main(int argc, char **argv) {
    int iterations = atoi(argv[1]);
    float *x;
    cudaMalloc(&x, 64);
    for (int i = 0; i < iterations; i++) {
        step<<<1, 1>>>(x);
        cudaStreamSynchronize(0);
    }
    return 0;
}
