"""A PyTorch MLP: a few training steps and then inference, on the GPU, unchanged by openmps.

Run by test/gpu/unmodified.test.ts without openmps and through `openmps exec` / `openmps run -n 4`,
whose outputs it compares. What it prints is the same in every run on the same GPU: fixed seeds,
data made on the CPU, deterministic algorithms (cuBLAS's workspace pinned by
CUBLAS_WORKSPACE_CONFIG), TF32 off. Bit-equality across runs is still not promised: cuBLAS chooses
its kernels from the SMs it sees, and a client with an SM share (openmps run -n 4 gives each copy
25%) sees fewer, so the harness compares the printed values with a relative tolerance of 1e-4;
they are printed with 7 significant digits, enough for that.

With OPENMPS_TEST_RELEASE_FILE set it prints "holding <pid>" on stderr after its last result and
waits for that file before it exits, with its model still on the GPU (the harness reads the
daemon's state meanwhile, or SIGKILLs it).
"""
import os
import sys
import time

# Before torch initializes cuBLAS: the deterministic workspace configuration that
# torch.use_deterministic_algorithms asks for.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402


def hold_if_asked() -> None:
    release = os.environ.get("OPENMPS_TEST_RELEASE_FILE", "")
    if not release:
        return
    print(f"holding {os.getpid()}", file=sys.stderr, flush=True)
    while not os.path.exists(release):
        time.sleep(0.005)


def main() -> int:
    if not torch.cuda.is_available():
        print("torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(0)
    device = torch.device("cuda")

    # Data on the CPU from a seeded generator: the same tensors on every machine.
    gen = torch.Generator().manual_seed(1234)
    inputs = torch.randn(256, 64, generator=gen)
    labels = torch.randint(0, 10, (256,), generator=gen)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    model = model.to(device)
    inputs, labels = inputs.to(device), labels.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    model.train()
    for step in range(8):
        batch = slice((step % 2) * 128, (step % 2) * 128 + 128)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item():.6e}")

    model.eval()
    with torch.no_grad():
        probe = torch.randn(16, 64, generator=gen).to(device)
        logits = model(probe)
        print(f"infer logits_sum {logits.sum().item():.6e} abs_sum {logits.abs().sum().item():.6e}")
        print("infer first " + " ".join(f"{v:.6e}" for v in logits[0].tolist()))
        print("infer argmax " + " ".join(str(v) for v in logits.argmax(dim=1).tolist()))
        weight_norm = sum(p.double().pow(2).sum().item() for p in model.parameters())
        print(f"weights sq_norm {weight_norm:.6e}")
    torch.cuda.synchronize()
    hold_if_asked()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
