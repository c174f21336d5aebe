"""Export a bundle of an UNTRAINED model, for speed measurements of architectures only.

    python benchmarks/export_untrained.py --encoder resnet50_conv4c --head paper_conv3d \
        --image-size 224 --out /tmp/paper_bundle [--quantize-int8]
    python -m tcc_model.bench_engine --bundle /tmp/paper_bundle

Weights are random (seeded), so the embeddings mean nothing; latency, FLOPs and ONNX parity do
not depend on them. The paper model's ResNet-50 needs ImageNet weights to be useful, which
training loads from a local file (``--backbone-weights``).
"""

from __future__ import annotations

import argparse

import torch

from tcc_model.export import export_bundle
from tcc_model.models import ModelConfig, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", default="light", choices=["light", "vggm", "resnet50_conv4c"])
    p.add_argument("--head", default="light", choices=["light", "paper_conv3d"])
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--out", required=True)
    p.add_argument("--quantize-int8", action="store_true")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=args.encoder, head=args.head, image_size=args.image_size, train_base="all"
    )
    model = build_model(cfg).eval()
    manifest = export_bundle(
        model,
        args.out,
        model_config=cfg.to_dict(),
        exporter=args.exporter,
        quantize_int8=args.quantize_int8,
        overwrite=True,
    )
    print(f"wrote {args.out} (untrained {args.encoder} + {args.head} at {args.image_size}²)")
    print(f"ONNX vs PyTorch max |diff|: {manifest['verification']['max_abs_diff_embeddings']:.2e}")


if __name__ == "__main__":
    main()
