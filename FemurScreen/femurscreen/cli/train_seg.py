"""``femurscreen train-seg``: train the coarse and fine VB-Nets from a cohort CSV."""

from __future__ import annotations

import argparse
import shlex
import sys

NAME = "train-seg"
HELP = "train the VB-Net femur segmentation models (coarse + fine) from a cohort CSV"
EXAMPLE = "femurscreen train-seg phantoms/cohort.csv --out models/vbnet --epochs 40 --seed 1"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cohort",
        metavar="COHORT.csv",
        help="CSV with case_id, ct, mask columns (paths relative to the CSV; masks 0/1/2 with "
        "1 = patient's left femur), e.g. written by 'femurscreen phantom'",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="weights folder to write")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per stage (default 40)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--coarse-only", action="store_true", help="train only the coarse model")
    which.add_argument("--fine-only", action="store_true", help="train only the fine model")
    parser.add_argument(
        "--resume", action="store_true", help="continue from DIR/checkpoints/ (optimizer too)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="cases held out for validation (0.2)"
    )
    parser.add_argument(
        "--crop",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=(112, 96, 160),
        help="fine crop in voxels x y z, multiples of 16 (default 112 96 160)",
    )
    parser.add_argument(
        "--crop-offset",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=(0.0, 0.0, -10.0),
        help="crop centre minus femur centroid in mm, x lateral (default 0 0 -10)",
    )
    parser.add_argument(
        "--train-crop",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="fine crop the training draws, multiples of 16 (default: --crop); smaller crops "
        "make CPU fine-tuning affordable, validation and inference keep --crop",
    )
    parser.add_argument(
        "--head-focus",
        type=float,
        default=0.0,
        metavar="P",
        help="share of fine training crops centred on the femoral head (default 0)",
    )
    parser.add_argument("--fine-spacing", type=float, default=1.0, help="mm (default 1.0)")
    parser.add_argument("--coarse-spacing", type=float, default=5.0, help="mm (default 5.0)")
    parser.add_argument(
        "--coarse-classes",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: femur, sides by the body midline in world x (default); 3: left/right classes",
    )
    parser.add_argument("--coarse-base-channels", type=int, default=8, help="(default 8)")
    parser.add_argument("--fine-base-channels", type=int, default=16, help="(default 16)")
    parser.add_argument("--batch-size", type=int, default=2, help="fine crops per step (2)")
    parser.add_argument(
        "--iters-per-epoch", type=int, default=None, help="default: one pass over the cases"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes drawing training samples (default 0: in the training process); "
        "results do not depend on it",
    )
    parser.add_argument(
        "--init-from",
        metavar="WEIGHTS_DIR",
        default=None,
        help="start from the verified models of this weights folder (fine-tuning), e.g. the "
        "shipped FemurScreen/Resources/Models/vbnet-demo",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="per stage: stop after the epoch that passes this many minutes and write the "
        "weights (the learning-rate schedule is not shortened; --resume continues)",
    )
    demo = parser.add_mutually_exclusive_group()
    demo.add_argument(
        "--demo",
        dest="demo",
        action="store_true",
        default=None,
        help="label the weights DEMO (the default: no clinical training data exists here)",
    )
    demo.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="do not label the weights DEMO (only for models trained on real labelled CT)",
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.segmentation.vbnet.training import TrainConfig, train_seg

    stages = ("coarse",) if args.coarse_only else ("fine",) if args.fine_only else None
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        val_fraction=args.val_fraction,
        fine_crop=tuple(args.crop),
        fine_crop_offset=tuple(args.crop_offset),
        fine_train_crop=tuple(args.train_crop) if args.train_crop else None,
        head_focus=args.head_focus,
        fine_spacing=args.fine_spacing,
        coarse_spacing=args.coarse_spacing,
        coarse_classes=args.coarse_classes,
        coarse_base_channels=args.coarse_base_channels,
        fine_base_channels=args.fine_base_channels,
        batch_size=args.batch_size,
        iters_per_epoch=args.iters_per_epoch,
        lr=args.lr,
        threads=args.threads,
        workers=max(0, args.workers),
        max_minutes=args.max_minutes,
        init_from=args.init_from,
        demo=args.demo,
        resume=args.resume,
    )
    if stages:
        config.stages = stages
    command = "femurscreen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    manifest = train_seg(args.cohort, args.out, config, command_line=command)
    for name, entry in manifest["models"].items():
        final = entry.get("training", {}).get("final_metrics", {})
        dice = final.get("val_dice_mean")
        print(
            f"{name}: {entry['file']} ({entry['parameters']:,} parameters, sha256 "
            f"{entry['sha256'][:12]}...), val Dice {'n/a' if dice is None else f'{dice:.3f}'}"
        )
    return 0
