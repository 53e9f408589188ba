"""Training commands for ``cds-service``: phantoms, train, export, evaluate (torch imported lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cds_service.settings import REPO_ROOT


def _phantoms(args: argparse.Namespace) -> int:
    from cds_service.training.phantoms import SITES, TRAINING_SITES, write_phantom_set

    if args.contact_sheet:
        from cds_service.training.phantoms.contact_sheet import write_pictures

        for path in write_pictures(Path(args.contact_sheet), args.seed):
            print(f"wrote {path}")
        return 0
    sites = tuple(args.sites.split(",")) if args.sites else TRAINING_SITES
    unknown = [site for site in sites if site not in SITES]
    if unknown:
        raise SystemExit(f"unknown site profile(s): {', '.join(unknown)}; known: {', '.join(SITES)}")
    labels = write_phantom_set(Path(args.output), args.count, args.seed, sites, version=args.generator)
    print(f"wrote {args.count} studies and {labels}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cds_service.training.train import TrainConfig, train_all

    config = TrainConfig(
        backbone=args.backbone,
        input_size=args.input_size,
        output_stride=args.output_stride,
        train_studies=args.train_studies,
        val_studies=args.val_studies,
        fracture_epochs=args.fracture_epochs,
        garden_epochs=args.garden_epochs,
        subtle_weight=args.subtle_weight,
        learning_rate=args.learning_rate,
        zero_init_head=args.zero_init_head,
        clip_grad_norm=args.clip_grad_norm,
        cam_box_weight=args.cam_box_weight,
        garden_init=args.garden_init,
        fracture_init=args.fracture_init,
        prevalence=args.prevalence,
        fracture_sites=args.fracture_sites,
        generator=args.generator,
        seed=args.seed,
        **({"training_data": args.training_data} if args.data else {}),
    )
    if args.export_only:
        from cds_service.training.train import export_checkpoints

        summary = export_checkpoints(config, Path(args.repository), Path(args.work))
    else:
        summary = train_all(config, Path(args.repository), Path(args.work), Path(args.data) if args.data else None)
    fracture, garden = summary["fracture"], summary["garden"]
    if "kept" in fracture:
        print(f"fracture: kept {fracture['kept']}")
    else:
        print(
            f"fracture: validation AUC {fracture['val_auc']:.3f}, threshold {fracture['threshold']:.3f} "
            f"(sensitivity {fracture['val_sensitivity']:.3f}, specificity {fracture['val_specificity']:.3f})"
        )
    print(
        f"garden: kept {garden['kept']}"
        if "kept" in garden
        else f"garden: validation accuracy {garden['val_accuracy']:.3f}"
    )
    return 0


def _prevalence(text: str) -> float:
    """``--prevalence``: 0, or a share strictly between 0 and 1."""
    value = float(text)
    if value != 0 and not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a share in (0, 1), or 0 for the validation's own: {text}")
    return value


def _export(args: argparse.Namespace) -> int:
    import torch

    from cds_service.training.config import FRACTURE_CLASSES, GARDEN_CLASSES
    from cds_service.training.export import ExportMetadata, export_model
    from cds_service.training.model import CamNet, create_backbone

    torch.manual_seed(args.seed)
    for name, classes in (("fracture", FRACTURE_CLASSES), ("garden", GARDEN_CLASSES)):
        net = CamNet(create_backbone(args.backbone, len(classes), args.output_stride)).eval()
        path = export_model(net, Path(args.repository), name, ExportMetadata(classes, args.backbone, args.input_size))
        print(f"exported untrained {name} to {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cds_service.training.evaluation import evaluate

    evaluate(
        Path(args.repository),
        Path(args.output),
        studies=args.studies,
        seed=args.seed,
        fast=args.fast,
        data=Path(args.data) if args.data else None,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the ``cds-service`` parser."""
    from cds_service.training.config import TrainConfig

    defaults = TrainConfig()
    repository = str(REPO_ROOT / "model_repository")

    phantoms = subparsers.add_parser("phantoms", help="write synthetic AP pelvis phantoms (DICOM + labels.csv)")
    phantoms.add_argument("--output", default="var/phantoms", help="folder (default: %(default)s)")
    phantoms.add_argument("--count", type=int, default=100, help="number of studies (default: %(default)s)")
    phantoms.add_argument("--seed", type=int, default=1)
    phantoms.add_argument("--sites", default="", help="comma-separated site profiles (default: the training sites)")
    phantoms.add_argument(
        "--generator",
        type=int,
        choices=(1, 2),
        default=2,
        help="phantom generator: 2 rendered from 3-D anatomy (the shipped models'), 1 the cartoon (default: 2)",
    )
    phantoms.add_argument(
        "--contact-sheet",
        default="",
        metavar="PATH",
        help="instead of a data set, write the version-2 contact sheet (PNG) to PATH and the cartoon-versus-"
        "version-2 picture beside it (PATH with contact_sheet → cartoon_vs_v2); uses --seed",
    )
    phantoms.set_defaults(func=_phantoms)

    train = subparsers.add_parser("train", help="train the fracture and Garden models and export them [train extra]")
    train.add_argument("--backbone", default=defaults.backbone, help="timm model name (default: %(default)s)")
    train.add_argument("--input-size", type=int, default=defaults.input_size)
    train.add_argument(
        "--output-stride", type=int, choices=(8, 16, 32), default=defaults.output_stride, help="heat-map stride"
    )
    train.add_argument("--train-studies", type=int, default=defaults.train_studies)
    train.add_argument("--val-studies", type=int, default=defaults.val_studies)
    train.add_argument(
        "--fracture-epochs",
        type=int,
        default=defaults.fracture_epochs,
        help="0: train the Garden model only and keep the fracture model in --repository (default: %(default)s)",
    )
    train.add_argument(
        "--garden-epochs",
        type=int,
        default=defaults.garden_epochs,
        help="0: train the fracture model only and keep the Garden model in --repository (default: %(default)s)",
    )
    train.add_argument(
        "--subtle-weight", type=float, default=defaults.subtle_weight, help="loss weight of Garden I / AO A1 crops"
    )
    train.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help="AdamW peak (one-cycle) learning rate"
    )
    train.add_argument(
        "--zero-init-head",
        action="store_true",
        help="start a new classifier at zero (every crop at chance); one loaded by --*-init is kept",
    )
    train.add_argument(
        "--clip-grad-norm", type=float, default=defaults.clip_grad_norm, help="clip the gradient norm (0 = off)"
    )
    train.add_argument(
        "--cam-box-weight",
        type=float,
        default=defaults.cam_box_weight,
        help="weight of the heat map's box guidance (fracture box / off the femur; 0 = off)",
    )
    train.add_argument(
        "--garden-init",
        default=defaults.garden_init,
        help="start the Garden model from a checkpoint: 'fracture' (WORK/fracture.pt: its features), "
        "'garden' (WORK/garden.pt: a fine-tune, classifier included), 'repository' (the Garden model "
        "served from --repository, rebuilt from its ONNX: no work folder needed) or a path",
    )
    train.add_argument(
        "--fracture-init",
        default=defaults.fracture_init,
        help="continue the fracture model from a checkpoint (a fine-tune): 'fracture' (WORK/fracture.pt), "
        "'repository' (the model served from --repository, rebuilt from its ONNX) or a path",
    )
    train.add_argument(
        "--prevalence",
        type=_prevalence,
        default=defaults.prevalence,
        help="share of fractured hips the served p(fracture) is calibrated for, in (0, 1); "
        "0 = the validation split's own (no prior shift)",
    )
    train.add_argument(
        "--fracture-sites",
        action="store_true",
        help="a site-aware fracture model: none / femoral_neck / trochanteric (the service then stages Garden "
        "only for a femoral-neck call); default: fracture / no fracture",
    )
    train.add_argument(
        "--generator",
        type=int,
        choices=(1, 2),
        default=defaults.generator,
        help="phantom generator: 1 the 2-D cartoon, 2 radiographs rendered from 3-D anatomy (default: %(default)s)",
    )
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--repository", default=repository, help="model repository to export into")
    train.add_argument("--work", default="var/training", help="datasets, checkpoints, summary")
    train.add_argument("--export-only", action="store_true", help="re-export the checkpoints in --work (no training)")
    train.add_argument(
        "--data",
        default="",
        help="folder of DICOM files + labels.csv to train on instead of phantoms (site 'val' = validation)",
    )
    train.add_argument(
        "--training-data", default="real-radiographs", help="how the --data set is described in the model"
    )
    train.set_defaults(func=_train)

    export = subparsers.add_parser("export", help="export UNTRAINED models with the serving contract [train extra]")
    export.add_argument("--backbone", default=defaults.backbone)
    export.add_argument("--input-size", type=int, default=defaults.input_size)
    export.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=defaults.output_stride)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--repository", default=repository)
    export.set_defaults(func=_export)

    evaluate = subparsers.add_parser(
        "evaluate", help="STARD-style evaluation on fresh held-out phantoms or --data [train extra]"
    )
    evaluate.add_argument("--repository", default=repository)
    evaluate.add_argument("--output", default="docs/evaluation", help="report folder (default: %(default)s)")
    evaluate.add_argument("--studies", type=int, default=400, help="studies per site group (default: %(default)s)")
    evaluate.add_argument("--seed", type=int, default=424242)
    evaluate.add_argument("--fast", action="store_true", help="small set, fewer bootstrap resamples (CI)")
    evaluate.add_argument(
        "--data",
        default="",
        help="folder of DICOM files + labels.csv (as for train --data) to evaluate on instead of phantoms",
    )
    evaluate.set_defaults(func=_evaluate)
