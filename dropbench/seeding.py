"""Independent random streams derived from names, so a cell's numbers depend on the cell alone."""

import hashlib
import json

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' canonical JSON: stable across processes, platforms and versions."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator of its own (never the global stream), seeded from `parts`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*parts))
    return generator
