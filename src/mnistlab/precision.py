"""Which arithmetic a run uses: bf16 autocast only where the hardware computes bf16 natively.

On a CPU without AVX-512 BF16 or AMX (most laptops, many cloud VMs: AVX2 only), PyTorch emulates
bf16 matrix math through fp32 and conversions, and a bf16 autocast step costs several times an
fp32 one (7x for the `fast` recipe on 2 AVX2 cores). `precision = "auto"` (the default) picks bf16
where it is native and fp32 everywhere else, and says why; the run log, summary and benchmarks
record the choice next to the CPU's features.

A model, optimizer or loss of the user's own trains in fp32 under `auto` (as Lightning makes mixed
precision opt-in): bf16 autocast changes what their code computes (an in-place buffer update in fp32
meets a bf16 tensor), and that choice is theirs; `precision = "bf16"` asks for it. The zoo's recipes
keep `auto`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import machine

CHOICES = ("auto", "fp32", "bf16")
# x86: AVX-512 BF16 (Cooper Lake, Zen 4 and later) or AMX (Sapphire Rapids and later); Arm: the BF16
# extension (Armv8.6; Graviton 3, Neoverse V1). /proc/cpuinfo's names, as machine.CPU_FEATURES lists them.
NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class Precision:
    requested: str  # auto | fp32 | bf16
    chosen: str  # fp32 | bf16
    reason: str

    def as_dict(self) -> dict:
        return {"requested": self.requested, "chosen": self.chosen, "reason": self.reason}


def native_bf16(device: torch.device, cpu_features: list[str] | None = None) -> tuple[bool, str]:
    """(whether `device` computes bf16 natively, the evidence in words)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        return False, f"{name} (compute capability {major}.{minor}) has no native bf16 (needs 8.0 or later)"
    if device.type != "cpu":
        return False, f"native bf16 on {device.type} is not known to mnistlab"
    features = machine.describe()["cpu_features"] if cpu_features is None else cpu_features
    native = [f for f in NATIVE_BF16_CPU_FEATURES if f in features]
    if native:
        return True, f"the CPU has {', '.join(native)}"
    listed = ", ".join(features) or "no listed features"
    return False, f"the CPU has no native bf16 ({listed}; bf16 would be emulated through fp32)"


def choose(requested: str, device: torch.device, cpu_features: list[str] | None = None,
           own: tuple[str, ...] = ()) -> Precision:
    """The precision a run on `device` uses for `requested` (auto | fp32 | bf16), and why; `own` names
    the roles (model, optimizer, loss) that are the user's own code: auto keeps those in fp32."""
    if requested not in CHOICES:
        raise ValueError(f"precision={requested!r}: expected {' | '.join(CHOICES)}")
    native, evidence = native_bf16(device, cpu_features)
    if requested == "auto" and own:
        return Precision(requested, "fp32", f"auto: fp32, because the {' and '.join(own)} {'is' if len(own) == 1 else 'are'} "
                         "your own code (bf16 autocast would change what it computes; precision=bf16 asks for it"
                         + (f", and {evidence}" if native else "") + ")")
    if requested == "auto":
        chosen = "bf16" if native else "fp32"
        return Precision(requested, chosen, f"auto: {chosen}, because {evidence}")
    if requested == "bf16" and not native:
        return Precision(requested, "bf16", f"bf16 as requested, though {evidence}: expect it to be slower than fp32")
    return Precision(requested, requested, f"{requested} as requested ({evidence})")
