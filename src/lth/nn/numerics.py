"""How a training's arithmetic is done on a GPU, made explicit.

`train.precision` (part of the training IDs): "fp32" (the default) is strict float32 for
matmuls and convolutions; "tf32" lets both use TensorFloat-32 on GPUs that have it (faster,
~10 mantissa bits in the products; on the CPU plain float32); "bf16" runs every forward pass
under bfloat16 autocast, on the GPU and the CPU alike (matmuls and convolutions in bfloat16,
8 mantissa bits; weights, gradients' updates, optimizer state, BatchNorm and the loss stay
float32). Torch's own default differs (TF32 convolutions, strict matmuls): it is never used
implicitly.

`deterministic` (execution only, like `device`): CUBLAS_WORKSPACE_CONFIG set before the first
cuBLAS call, torch.use_deterministic_algorithms(True), cuDNN's autotuner off. An operation
without a deterministic implementation then stops the job with one line.
"""
from __future__ import annotations

import os


class NumericsError(RuntimeError):
    """A setting the device cannot honour; one line."""


def configure(precision: str, deterministic: bool) -> None:
    """Call before the job's first CUDA operation."""
    import torch
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def autocast(precision: str, device):
    """The context a forward pass runs in: bfloat16 autocast for "bf16", else none. Only the
    forward: the loss is taken on float32 logits and backward runs outside it (as torch
    advises)."""
    import contextlib

    import torch
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def explain(exc: RuntimeError) -> NumericsError | None:
    """The one-line error for torch's refusal of a non-deterministic operation, else None."""
    text = str(exc)
    if type(exc) is not RuntimeError or "deterministic" not in text:  # torch's, not one of ours
        return None
    first = text.strip().splitlines()[0]
    return NumericsError(f"an operation has no deterministic implementation on this device ({first[:160]}); "
                         "set deterministic: false, or run on the CPU")


def device_info(device: str) -> dict:
    """What decides the bits of a run: the torch build, and on a GPU its model, compute
    capability, driver, CUDA and cuDNN versions (recorded in stats.json)."""
    import platform

    import torch
    info = {"torch": torch.__version__, "machine": platform.machine()}
    if not str(device).startswith("cuda"):
        return info
    props = torch.cuda.get_device_properties(device)
    info.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                 "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "driver": _driver_version()})
    return info


def _driver_version() -> str | None:
    import shutil
    import subprocess
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None
