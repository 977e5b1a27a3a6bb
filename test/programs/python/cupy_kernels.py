"""CuPy elementwise kernels and reductions on the GPU, unchanged by openmps.

Run by test/gpu/unmodified.test.ts without openmps and through `openmps exec`, whose outputs it
compares. Data is made with NumPy's seeded generator on the CPU. An ElementwiseKernel and a
ReductionKernel are compiled by CuPy at run time (NVRTC, then cuModuleLoadData of the result);
cp.sum/max/argmax/mean and the ufuncs use CuPy's own kernels. Elementwise results are the same
bits in every run on the same GPU; a reduction's order may follow the launch configuration CuPy
picks from the device, so the harness compares with a relative tolerance of 1e-6 and the values
are printed with 9 significant digits.

With OPENMPS_TEST_RELEASE_FILE set it prints "holding <pid>" on stderr after its last result and
waits for that file before it exits, with its arrays still on the GPU.
"""
import os
import sys
import time

import numpy as np
import cupy as cp


def hold_if_asked() -> None:
    release = os.environ.get("OPENMPS_TEST_RELEASE_FILE", "")
    if not release:
        return
    print(f"holding {os.getpid()}", file=sys.stderr, flush=True)
    while not os.path.exists(release):
        time.sleep(0.005)


def show(name: str, arr) -> None:
    host = cp.asnumpy(arr).astype(np.float64).ravel()
    picks = " ".join(f"{host[i]:.9g}" for i in (0, 1, host.size // 2, host.size - 1))
    print(f"{name} n={host.size} sum={host.sum():.9g} {picks}")


def main() -> int:
    rng = np.random.default_rng(42)
    x = cp.asarray(rng.standard_normal(1 << 20, dtype=np.float32))
    y = cp.asarray(rng.standard_normal(1 << 20, dtype=np.float32))

    fma = cp.ElementwiseKernel("float32 x, float32 y, float32 a", "float32 z", "z = x * a + y", "openmps_fma")
    show("elementwise_fma", fma(x, y, cp.float32(1.75)))
    show("ufunc_sin_mul", cp.sin(x) * cp.exp(y * 0.25))
    show("where_abs", cp.where(x > y, cp.abs(x), -y))

    sum_sq = cp.ReductionKernel("float32 x", "float64 s", "(double)x * x", "a + b", "s = a", "0", "openmps_sum_sq")
    print(f"reduction_sum_sq {float(sum_sq(x)):.9g}")
    print(f"reduction_sum {float(cp.sum(x, dtype=cp.float64)):.9g}")
    print(f"reduction_max {float(cp.max(y)):.9g} argmax {int(cp.argmax(y))}")
    print(f"reduction_mean {float(cp.mean(x * y, dtype=cp.float64)):.9g}")
    m = x[: 512 * 512].reshape(512, 512)
    show("row_sums", cp.sum(m, axis=1, dtype=cp.float64))
    show("matmul", m[:128, :256] @ m[256:512, :128])
    cp.cuda.Device().synchronize()
    hold_if_asked()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
