"""The PyTorch benchmark client (bench/run.ts's `torch` benchmark): small-MLP inference, batch 1.

The same script in every mode; only its environment differs: openmps (openmps's libcuda.so.1 first
on LD_LIBRARY_PATH and a daemon running: the process is an openmps client, as under `openmps exec`),
bypass (the real driver, no daemon: the GPU time-slices the processes' contexts) and nvidia-mps (the
real driver with CUDA_MPS_PIPE_DIRECTORY naming NVIDIA's daemon).

  python3 torch-mlp.py --requests Q --hidden H

Protocol, as bench/clients/bench-client.ts's: one JSON object a line on stdout. Once the model is on
the GPU, its first result back on the host and a warm-up done, {"event":"ready","firstResultAt":ms}
(wall-clock ms of the first result, which the runner takes from its own spawn time); then, on the
line `go`, Q requests timed one by one and {"event":"done","start","end","requests","samples"}
(samples in microseconds); on a failure {"event":"error","code","message"} and exit status 1. A
request: a 1 x H input from host memory to the GPU, Linear + ReLU, Linear + ReLU, Linear (H x H
each), the 1 x H output back to the host (which waits for the GPU).
"""
import argparse
import json
import os
import re
import sys
import time


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def wait_for(word: str) -> None:
    for line in sys.stdin:
        if line.strip() == word:
            return
        if line.strip() == "stop":
            break
    raise RuntimeError(f'stopped while waiting for "{word}"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=20)
    opts = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    torch.manual_seed(0)
    h = opts.hidden
    model = torch.nn.Sequential(
        torch.nn.Linear(h, h), torch.nn.ReLU(),
        torch.nn.Linear(h, h), torch.nn.ReLU(),
        torch.nn.Linear(h, h),
    ).to("cuda").eval()
    x = torch.randn(1, h)
    with torch.inference_mode():
        first = model(x.to("cuda")).cpu()
        first_at = time.time() * 1000
        if not torch.isfinite(first).all():
            raise RuntimeError("the first result is not finite")
        for _ in range(opts.warmup):
            model(x.to("cuda")).cpu()
        emit({"event": "ready", "pid": os.getpid(), "firstResultAt": first_at})
        wait_for("go")
        samples = []
        start = time.time() * 1000
        for _ in range(opts.requests):
            t0 = time.perf_counter()
            model(x.to("cuda")).cpu()
            samples.append((time.perf_counter() - t0) * 1e6)
        end = time.time() * 1000
    emit({"event": "done", "start": start, "end": end, "requests": opts.requests, "samples": samples})
    # The runner ends a client with `stop` and then closes stdin.
    for line in sys.stdin:
        if line.strip() == "stop":
            break


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001: every failure is reported to the runner as an error event
        text = str(err)
        # A CUDA failure's name where torch gives one ("CUDA error: ... cudaErrorX" or "CUDA error: out of memory").
        found = re.search(r"(cudaError\w+|CUDA_ERROR_\w+)", text)
        emit({"event": "error", "code": found.group(1) if found else type(err).__name__, "message": text.splitlines()[0] if text else repr(err)})
        sys.exit(1)
