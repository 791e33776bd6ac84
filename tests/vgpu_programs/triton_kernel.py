"""A Triton kernel compiled with the bundled ptxas and launched through the vGPU driver."""
import torch
import triton
import triton.language as tl


@triton.jit
def scale_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)


x = torch.empty(4096, device="cuda")
scale_kernel[(4,)](x, 4096, BLOCK=1024)
torch.cuda.synchronize()
print("launched")
