// Launches an empty kernel until killed: what an engine process busy at shutdown looks like.
#include <cstdio>

__global__ void busy_kernel() {}

int main() {
    busy_kernel<<<1, 1>>>();
    printf("launching\n");
    fflush(stdout);
    for (;;) busy_kernel<<<1, 1>>>();
}
