"""Train a shapes-world CLIP contrastively on scenes generated on the fly.

Usage: ``python -m captum_gscorecam.shapes.train --tower rn|vit [--minutes M] [--out PATH]``

Training scene seeds count up from 0 and never reach ``HELD_OUT_SEED`` (10,000,000), where
evaluation seeds start; each scene draws from its own numpy generator, and ``--seed`` seeds torch.
A caption names one to three of its scene's objects, so single-object prompts learn to describe
crowded scenes too; the symmetric InfoNCE counts every caption whose objects all appear in an
image as a match for it. The learning rate warms up linearly, then follows a cosine over the
wall-clock budget, so a run ends on schedule whatever the machine's speed.
"""

from __future__ import annotations

import argparse
import math
import time
from itertools import product
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captum_gscorecam.shapes.models import (
    TOWERS,
    Tokenizer,
    build_model,
    checkpoint_path,
    make_preprocess,
    make_tokenizer,
    model_config,
    normalize,
    zero_shot_recall,
)
from captum_gscorecam.shapes.scenes import (
    COLORS,
    DEFAULT_SIZE,
    PROMPT_TEMPLATE,
    SHAPES,
    ShapesDataset,
    caption,
    to_tensor,
)

HELD_OUT_SEED = 10_000_000
_MEAN, _STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
_MAX_LOGIT_SCALE = math.log(100.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tower", choices=TOWERS, required=True)
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--max-objects", type=int, default=4, help="objects per scene: 1 to this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--vocabulary-prompts",
        action="store_true",
        help="also contrast every image with all colour-shape prompts",
    )
    parser.add_argument("--workers", type=int, default=1, help="scene rendering processes")
    parser.add_argument("--eval-scenes", type=int, default=100, help="held-out 3-object scenes")
    return parser.parse_args(argv)


def learning_rate(args: argparse.Namespace, step: int, progress: float) -> float:
    """Linear warmup over steps, then a cosine to zero over the fraction of the budget spent."""
    warmup = min(1.0, (step + 1) / args.warmup_steps)
    return args.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def contrastive_loss(
    model: open_clip.CLIP, images: torch.Tensor, texts: torch.Tensor, matches: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, with the model's learned temperature.

    A caption that names only objects present in another image is a true match for it, not a
    negative: ``matches[i, j]`` marks caption j as describing image i, and each direction's target
    spreads evenly over the matches. Texts may outnumber images.
    """
    image_features, text_features, logit_scale = model(images, texts)[:3]
    logits = logit_scale * image_features @ text_features.T
    targets = matches.float()
    image_to_text = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
    # A vocabulary prompt may describe no image of the batch; it then has no image to pick.
    described = matches.any(0)
    text_targets = targets[:, described] / targets[:, described].sum(0, keepdim=True)
    text_to_image = F.cross_entropy(logits.T[described], text_targets.T)
    return 0.5 * (image_to_text + text_to_image)


def make_batch(
    dataset: ShapesDataset, indices: range, tokenizer: Tokenizer, vocabulary: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised images, text tokens, and which texts describe which images.

    The texts are the scenes' captions, followed by every (colour, shape) prompt when
    ``vocabulary`` is set, so each image also meets its hardest negatives: its objects' colours
    with other shapes, and its shapes in other colours.
    """
    samples = [dataset.sample(i) for i in indices]
    images = torch.stack([to_tensor(scene.image) for scene, _ in samples])
    captions = [caption(objects) for _, objects in samples]
    named = [set(objects) for _, objects in samples]
    if vocabulary:
        pairs = list(product(COLORS, SHAPES))
        captions += [caption([pair]) for pair in pairs]
        named += [{pair} for pair in pairs]
    matches = torch.tensor([[text <= set(scene.objects) for text in named] for scene, _ in samples])
    return normalize(images, _MEAN, _STD), tokenizer(captions), matches


class Batches(Dataset):
    """Training batch k holds the scenes of seeds k * batch_size onwards, below HELD_OUT_SEED."""

    def __init__(self, args: argparse.Namespace, tokenizer: Tokenizer) -> None:
        self.dataset = ShapesDataset(
            range(HELD_OUT_SEED), n_objects=range(1, args.max_objects + 1), partial_captions=True
        )
        self.batch_size = args.batch_size
        self.tokenizer = tokenizer
        self.vocabulary = args.vocabulary_prompts

    def __len__(self) -> int:
        return HELD_OUT_SEED // self.batch_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = index * self.batch_size
        indices = range(first, first + self.batch_size)
        return make_batch(self.dataset, indices, self.tokenizer, self.vocabulary)


def train(args: argparse.Namespace) -> dict:
    """Run the training loop and return the checkpoint dict."""
    torch.manual_seed(args.seed)
    config = model_config(args.tower)
    model = build_model(config).train()
    tokenizer = make_tokenizer()
    # Rendering runs in worker processes, overlapping the model's steps.
    batches = DataLoader(Batches(args, tokenizer), batch_size=None, num_workers=args.workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    budget_s = args.minutes * 60.0
    start = time.monotonic()
    step, smoothed = 0, float("nan")
    with tqdm(desc=f"shapes-{args.tower}", unit="step") as bar:
        for batch in batches:
            if (elapsed := time.monotonic() - start) >= budget_s:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args, step, elapsed / budget_s)
            loss = contrastive_loss(model, *batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, _MAX_LOGIT_SCALE)
            smoothed = loss.item() if step == 0 else 0.95 * smoothed + 0.05 * loss.item()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{smoothed:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    minutes = (time.monotonic() - start) / 60.0
    model.eval()
    recall = zero_shot_recall(
        model,
        tokenizer,
        make_preprocess(DEFAULT_SIZE, _MEAN, _STD),
        range(HELD_OUT_SEED, HELD_OUT_SEED + args.eval_scenes),
    )
    state = model.state_dict()
    return {
        "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        "config": config,
        "image_size": DEFAULT_SIZE,
        "mean": tuple(_MEAN),
        "std": tuple(_STD),
        "vocabulary": {"shapes": SHAPES, "colors": COLORS, "prompt_template": PROMPT_TEMPLATE},
        "training": {
            "steps": step,
            "batch_size": args.batch_size,
            "minutes": round(minutes, 2),
            "final_loss": round(smoothed, 4),
            "seed": args.seed,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "vocabulary_prompts": args.vocabulary_prompts,
            "max_objects": args.max_objects,
            "threads": args.threads,
            "held_out_recall_3_objects": recall,
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Train, save the checkpoint, and print its training summary."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoint = train(args)
    out = checkpoint_path(args.tower) if args.out is None else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    size_mb = out.stat().st_size / 2**20
    print(f"saved {out} ({size_mb:.1f} MiB): {checkpoint['training']}")


if __name__ == "__main__":
    main()
