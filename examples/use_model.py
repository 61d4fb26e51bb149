"""Use an exported GERMINATOR checkpoint from Python, as an ordinary ``torch.nn.Module``.

    germinator-dist export JOB -o model.json
    python examples/use_model.py model.json            # a classifier: logits and accuracy on digits
    python examples/use_model.py lm.json --prompt "def "   # a byte LM: next-byte probabilities

The model's state is only seeds and a few floats per layer: every weight matrix is regenerated from the
seeds when the model runs (on the GPU when one is present), bit for bit the same each time.
"""

from __future__ import annotations

import argparse
import sys

import torch

from germinator_dist.core.checkpoint import load_checkpoint
from germinator_dist.core.model import GerminatorModel, build_model


def load(path: str, device: str | None = None) -> GerminatorModel:
    """The checkpoint as a module in eval mode, on ``device`` (default: cuda when present, else cpu)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_checkpoint(path).to(device).eval()


@torch.no_grad()
def classify(model: GerminatorModel, x: torch.Tensor) -> torch.Tensor:
    """Classifier logits: x (B, input_dim) floats -> (B, num_classes)."""
    return model(x.to(model.layers[0].alpha.device))


@torch.no_grad()
def next_byte_probs(model: GerminatorModel, prompt: bytes) -> torch.Tensor:
    """A byte LM's distribution of the byte after ``prompt`` (its last ``context`` bytes): (vocab,)."""
    tokens = torch.tensor(list(prompt[-model.spec.context :]), dtype=torch.long)  # (T,)
    logits = model(tokens.unsqueeze(0).to(model.layers[0].alpha.device))  # (1, T, vocab)
    return logits[0, -1].float().softmax(-1)  # (vocab,)


def state_summary(model: GerminatorModel) -> dict:
    """What the module's state holds: seeds (int64 buffers) and floats (parameters), and how many weights
    the layers regenerate from them."""
    state = model.state_dict()
    seeds = sum(t.numel() for name, t in state.items() if name.endswith(".seeds"))
    floats = sum(t.numel() for name, t in state.items() if t.is_floating_point())
    weights = sum(layer.out_features * layer.in_features for layer in model.layers)
    return {"tensors": len(state), "seeds": seeds, "floats": floats, "regenerated_weights": weights}


@torch.no_grad()
def weight_of(model: GerminatorModel, k: int) -> torch.Tensor:
    """Layer ``k``'s weight matrix, regenerated from its seeds now: (out, in) (routing group 0)."""
    layer = model.layers[k]
    return layer.weight(layer.generate(), layer.g.unsqueeze(0))[0]


@torch.no_grad()
def regenerated_from_seeds(model: GerminatorModel, x: torch.Tensor) -> bool:
    """A fresh module built from the spec alone, given only this model's state (seeds and floats),
    computes bit-identical outputs: nothing else was stored."""
    fresh = build_model(model.spec).to(x.device).eval()
    fresh.load_state_dict(model.state_dict())
    return torch.equal(fresh(x), model(x))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--prompt", default="def ", help="LM: the text whose next byte to predict")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    args = p.parse_args(argv)
    model = load(args.checkpoint, args.device)
    device = model.layers[0].alpha.device
    summary = state_summary(model)
    print(
        f"{type(model).__name__} on {device}: state = {summary['seeds']} seeds + {summary['floats']} "
        f"floats ({summary['tensors']} tensors); the layers regenerate {summary['regenerated_weights']:,} "
        "weights"
    )
    out: dict = {"device": str(device), **summary}
    if model.spec.kind == "lm":
        prompt = args.prompt.encode()
        probs = next_byte_probs(model, prompt)  # (vocab,)
        top = probs.topk(5)
        shown = "  ".join(f"{bytes([int(i)])!r} {float(q):.3f}" for q, i in zip(top.values, top.indices))
        print(f"next byte after {args.prompt!r}: {shown}")
        x = torch.tensor([list(prompt[-model.spec.context :])], device=device)  # (1, T)
        out["next_byte_probs"] = probs.cpu().tolist()
    else:
        from germinator_dist.core.data import load_digits_dataset

        if model.spec.input_dim == 64 and model.spec.num_classes == 10:  # digits: its test split
            data = load_digits_dataset()
            x, y = data.x_test, data.y_test
        else:  # another data set: a batch of standard-normal inputs of the right width
            x, y = torch.randn(8, model.spec.input_dim, generator=torch.Generator().manual_seed(0)), None
        logits = classify(model, x)  # (B, num_classes)
        print(f"logits {tuple(logits.shape)}; first row {[round(v, 3) for v in logits[0].tolist()]}")
        if y is not None:
            acc = float((logits.argmax(-1).cpu() == y).float().mean())
            print(f"accuracy on the {len(y)} test rows: {acc:.3f}")
            out["accuracy"] = acc
        x = x.to(device)
        out["logits_shape"] = list(logits.shape)
    w = weight_of(model, 0)
    same = torch.equal(w, weight_of(model, 0)) and regenerated_from_seeds(model, x)
    print(f"layer 0 weight {tuple(w.shape)} regenerated from {model.layers[0].n_seeds} seeds; "
          f"a fresh module given only seeds and floats computes the same outputs: {same}")  # fmt: skip
    out["regenerated"] = same
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
