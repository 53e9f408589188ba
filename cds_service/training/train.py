"""Train the fracture (2-class) and Garden (4-class) models on phantom hip crops, deterministically.

After training, each model is calibrated on the validation split (temperature scaling; for the
fracture model, then shifted to ``TrainConfig.prevalence``) and the fracture model's operating
threshold is chosen there for the published sensitivity (95.2 %), with Youden's point beside it;
all of it is stored with the exported model (:func:`export_checkpoints`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from cds_service.domain import prior_shift
from cds_service.findings import calibrate, softmax
from cds_service.training.calibration import (
    PUBLISHED_SENSITIVITY,
    fit_temperature,
    nll,
    sensitivity_threshold,
    specificity_threshold,
)
from cds_service.training.config import FRACTURE_CLASSES, FRACTURE_SITE_CLASSES, GARDEN_CLASSES, TrainConfig
from cds_service.training.dataset import CropSet, from_folder, generate
from cds_service.training.evaluation.localisation import pointing_game
from cds_service.training.export import SYNTHETIC_DISCLAIMER, ExportMetadata, export_model
from cds_service.training.guidance import cam_box_loss
from cds_service.training.metrics import roc_auc, youden_threshold
from cds_service.training.model import CamNet, create_backbone, load_features, normalise_batch
from cds_service.training.phantoms import LABELS


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """Exposure and noise jitter and a shift of up to 8 px on uint8 crops (no flips: crops share one
    canonical orientation). Returns the crops and the (dy, dx) shift, which moves the boxes too."""
    x = batch.float()
    gain = 0.85 + 0.3 * torch.rand(len(x), 1, 1, 1, generator=generator)
    offset = -20 + 40 * torch.rand(len(x), 1, 1, 1, generator=generator)
    noise = 4 * torch.randn(x.shape, generator=generator)
    shift = [int(v) for v in torch.randint(-8, 9, (2,), generator=generator)]
    x = torch.roll(x * gain + offset + noise, shifts=shift, dims=(2, 3))
    return x.clamp(0, 255), (shift[0], shift[1])


def shift_masks(masks: np.ndarray, shift: tuple[int, int], size: int) -> torch.Tensor:
    """Region masks ([N, m, m] over a ``size``-px crop) moved by the augmentation's (dy, dx) pixel
    shift, rounded to their own grid, so they stay on the bone the shifted crop shows."""
    scale = masks.shape[-1] / size
    rows, columns = round(shift[0] * scale), round(shift[1] * scale)
    return torch.roll(torch.from_numpy(masks), shifts=(rows, columns), dims=(1, 2))


def predict_logits(net: CamNet, images: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] and raw CAMs for uint8 crops [N, S, S] (eval mode, no grad)."""
    net.eval()
    logits, cams = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1)
            batch_logits, cam = net(normalise_batch(x))
            logits.append(batch_logits.numpy())
            cams.append(cam.numpy())
    return np.concatenate(logits), np.concatenate(cams)


def predict(net: CamNet, images: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (uncalibrated) and raw CAMs for uint8 crops [N, S, S]."""
    logits, cams = predict_logits(net, images, batch_size)
    return softmax(logits), cams


def fit(
    images: np.ndarray,
    targets: np.ndarray,
    classes: int,
    config: TrainConfig,
    epochs: int,
    title: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    sample_weight: np.ndarray | None = None,
    boxes: tuple[np.ndarray, np.ndarray] | None = None,
    val_boxes: np.ndarray | None = None,
    init: Path | None = None,
    femur_masks: np.ndarray | None = None,
) -> tuple[CamNet, list[dict]]:
    """Train a CamNet; returns it (eval mode) and the per-epoch history.

    It starts from random weights, or from ``init`` (a checkpoint of the same backbone): its classifier
    too when the number of classes matches (a fine-tune), else a new one on its features
    (:func:`~cds_service.training.model.load_features`).

    Classes are balanced by inverse frequency; ``sample_weight`` (per image) multiplies on top, which
    is how subtle fractures (Garden I, AO A1) weigh more than the easy ones. ``boxes`` (fracture
    boxes, proximal-femur boxes; crop pixels, NaN where absent) add the map's box guidance
    (:func:`~cds_service.training.guidance.cam_box_loss`, weight ``config.cam_box_weight``) for a
    2- or 3-class model; ``femur_masks`` (uint8 [N, m, m], the proximal femur's projected region,
    phantoms version 2) replace the femur boxes there. With ``val_boxes`` (the validation crops'
    fracture boxes) each epoch's record also holds ``val_localisation``: the share of validation
    fractures whose map peaks in the box.
    """
    seed_everything(config.seed, config.threads)
    net = CamNet(create_backbone(config.backbone, classes, config.output_stride))
    new_head = init is None or bool(load_features(net, torch.load(init, weights_only=True)))
    if config.zero_init_head and new_head:  # a classifier loaded with its checkpoint (a fine-tune) is kept
        nn.init.zeros_(net.classifier.weight)
        nn.init.zeros_(net.classifier.bias)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=steps)
    counts = np.bincount(targets, minlength=classes).astype(np.float32)
    weights = torch.from_numpy(counts.sum() / (classes * np.maximum(counts, 1)))
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.05, reduction="none")
    per_image = torch.from_numpy(
        np.ones(len(images), np.float32) if sample_weight is None else sample_weight.astype(np.float32)
    )
    generator = torch.Generator().manual_seed(config.seed)
    guided = boxes is not None and classes in (2, 3) and config.cam_box_weight > 0
    history = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns) as bar:
        task = bar.add_task(title, total=steps)
        fit_started, done = time.perf_counter(), 0
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(images), generator=generator).numpy()
            total, started = 0.0, time.perf_counter()
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                x, (dy, dx) = _augment(torch.from_numpy(images[index]).unsqueeze(1), generator)
                logits, cam = net(normalise_batch(x))
                losses = loss_fn(logits, torch.from_numpy(targets[index]).long()) * per_image[index]
                loss = losses.sum() / per_image[index].sum()
                if guided:
                    move = torch.tensor([dx, dy, dx, dy], dtype=torch.float32)
                    loss = loss + config.cam_box_weight * cam_box_loss(
                        guided_map(cam, torch.from_numpy(targets[index]).long()),
                        torch.from_numpy(boxes[0][index]) + move,
                        torch.from_numpy(boxes[1][index]) + move,
                        torch.from_numpy(targets[index] > 0),
                        images.shape[-1],
                        None if femur_masks is None else shift_masks(femur_masks[index], (dy, dx), images.shape[-1]),
                    )
                optimiser.zero_grad()
                loss.backward()
                if config.clip_grad_norm > 0:
                    nn.utils.clip_grad_norm_(net.parameters(), config.clip_grad_norm)
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(index)
                bar.advance(task)
                done += 1
                if not bar.console.is_terminal and done % max(1, steps // 40) == 0:  # a log file: a line per 2.5 %
                    rate = done / max(time.perf_counter() - fit_started, 1e-9)
                    bar.console.print(
                        f"{title}: step {done}/{steps}, {rate:.2f} steps/s, ~{(steps - done) / rate / 60:.0f} min left"
                    )
            record = {
                "epoch": epoch + 1,
                "input_size": int(images.shape[-1]),
                "loss": total / len(images),
                "seconds": time.perf_counter() - started,
            }
            if val is not None:
                probs, cams = predict(net, val[0])
                record["val_accuracy"] = float((probs.argmax(1) == val[1]).mean())
                if classes in (2, 3):  # a fracture model (the Garden model has 4): p(fracture) = 1 − p(none)
                    record["val_auc"] = roc_auc(val[1] > 0, 1 - probs[:, 0])
                if classes in (2, 3) and val_boxes is not None:
                    maps = guided_map(torch.from_numpy(cams), torch.from_numpy(probs.argmax(1))).numpy()
                    record["val_localisation"] = pointing_game(maps, val_boxes, val[0].shape[-1])
                if classes == 3:
                    record["val_site_accuracy"] = site_accuracy(probs, val[1])
            history.append(record)
            bar.console.print(f"{title} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()))
    return net.eval(), history


def guided_map(cam: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fracture map the box guidance and the localisation read, per crop [B, h, w]: the map of the
    crop's own fracture class (class 1 of a two-class model; the femoral-neck or trochanteric map of a
    site-aware one), and for a crop without a fracture the sum of the fracture classes' maps."""
    own = cam[torch.arange(len(cam)), targets.clamp(min=1)]
    return torch.where((targets > 0)[:, None, None], own, cam[:, 1:].sum(1))


def site_accuracy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Share of the fractured crops whose more probable site (femoral neck / trochanteric) is their own."""
    fractured = targets > 0
    if not fractured.any():
        return float("nan")
    return float((probabilities[fractured][:, 1:].argmax(1) + 1 == targets[fractured]).mean())


def fracture_classes(config: TrainConfig) -> tuple[str, ...]:
    """The fracture model's class names: FRACTURE_SITE_CLASSES with ``--fracture-sites``, else FRACTURE_CLASSES."""
    return FRACTURE_SITE_CLASSES if config.fracture_sites else FRACTURE_CLASSES


def fracture_targets(crops: CropSet, sites: bool) -> np.ndarray:
    """The fracture model's targets: 0/1 (no fracture / fracture), or with ``sites`` 0 none, 1 femoral
    neck (Garden I–IV), 2 trochanteric (AO/OTA 31-A) — FRACTURE_SITE_CLASSES's order."""
    if not sites:
        return crops.fractured.astype(int)
    return np.where(crops.garden >= 0, 1, np.where(crops.fractured, 2, 0))


def subtle_weights(crops: CropSet, weight: float) -> np.ndarray:
    """Per-crop loss weight: ``weight`` for the subtle subtypes (Garden I, AO A1), 1 otherwise."""
    subtle = np.isin(crops.label, [LABELS.index("garden_I"), LABELS.index("ao_A1")])
    return np.where(subtle, weight, 1.0).astype(np.float32)


def phantom_fingerprint(count: int, seed: int, size: int, generator: int = 1) -> str:
    """What determines a phantom crop set: its arguments and the source of every module that draws,
    encodes, decodes or splits it. A cached set is reused only while this is unchanged."""
    import hashlib

    from cds_service.dicom import decode, preprocess
    from cds_service.training import dataset, phantoms

    version = f"/v{generator}" if generator != 1 else ""  # generator 1's caches keep their fingerprint
    digest = hashlib.sha256(f"{count}/{seed}/{size}{version}".encode())
    # phantoms is a package: every module of it (renderers, physics, anatomy, site encoding) counts.
    sources = sorted(Path(phantoms.__file__).parent.glob("*.py"))
    for source in [*sources, *(Path(m.__file__) for m in (dataset, decode, preprocess))]:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _cached(path: Path, count: int, seed: int, size: int, generator: int = 1) -> CropSet:
    """Phantom crops from ``path`` when its fingerprint matches (hours of CPU saved), else generated and saved.

    A cache of the first ``n`` < ``count`` studies made by the same code is grown rather than
    redrawn: every study draws from its own stream, so studies ``n`` … ``count − 1`` rendered alone
    and appended give the set a full run would (a longer training stage keeps the shorter one's work).
    """
    stamp = path.with_suffix(".fingerprint")
    fingerprint = phantom_fingerprint(count, seed, size, generator)
    known = stamp.read_text() if path.exists() and stamp.exists() else ""
    if known == fingerprint:
        print(f"reusing {path} (same phantoms, size and code)")
        return CropSet.load(path)
    crops = CropSet.load(path) if known else None
    have = len(np.unique(crops.study)) if crops is not None else 0
    grows = crops is not None and 0 < have < count and int(crops.study.max()) + 1 == have
    if grows and known == phantom_fingerprint(have, seed, size, generator):
        print(f"growing {path}: {have} studies kept, {count - have} more drawn")
        crops = CropSet.concatenate([crops, generate(count, seed, size, generator=generator, start=have)])
    else:
        crops = generate(count, seed, size, generator=generator)
    crops.save(path)
    stamp.write_text(fingerprint)
    return crops


def train_all(config: TrainConfig, repository: Path, work: Path, data: Path | None = None) -> dict:
    """Build the datasets (phantoms, or ``data``: a folder of DICOM + labels.csv), train both models,
    save checkpoints, then :func:`export_checkpoints`. With ``data``, rows whose ``site`` is ``val``
    form the validation split; the others train."""
    work.mkdir(parents=True, exist_ok=True)
    size = config.input_size
    if data is None:
        generator = config.generator
        train = _cached(crop_cache(work, "train", size, generator), config.train_studies, config.seed, size, generator)
        val = _cached(crop_cache(work, "val", size, generator), config.val_studies, config.seed + 1, size, generator)
    else:
        crops = from_folder(data, size)
        is_val = crops.site == "val"
        if not is_val.any() or is_val.all():
            raise ValueError("labels.csv needs rows with site 'val' (validation) and rows with other sites (training)")
        train, val = crops.subset(~is_val), crops.subset(is_val)
        train.save(crop_cache(work, "train", size))
        val.save(crop_cache(work, "val", size))
    fracture_history: list[dict] = []
    if config.fracture_epochs > 0:  # 0: the fracture model already in the repository is kept
        fracture, fracture_history = fit(
            train.images,
            fracture_targets(train, config.fracture_sites),
            len(fracture_classes(config)),
            config,
            config.fracture_epochs,
            "fracture",
            val=(val.images, fracture_targets(val, config.fracture_sites)),
            sample_weight=subtle_weights(train, config.subtle_weight),
            boxes=(train.boxes, train.femur),
            val_boxes=val.boxes,
            femur_masks=train.femur_mask if train.has_femur_masks else None,
            init=_init(
                "--fracture-init",
                config.fracture_init,
                "fracture",
                len(fracture_classes(config)),
                config,
                repository,
                work,
                train.images,
            ),
        )
        torch.save(fracture.state_dict(), work / "fracture.pt")  # a later failure keeps the long first half
    garden_history: list[dict] = []
    if config.garden_epochs > 0:  # 0: the Garden model already in the repository is kept
        neck_train, neck_val = train.subset(train.garden >= 0), val.subset(val.garden >= 0)
        garden, garden_history = fit(
            neck_train.images,
            neck_train.garden,
            4,
            config,
            config.garden_epochs,
            "garden",
            val=(neck_val.images, neck_val.garden),
            sample_weight=subtle_weights(neck_train, config.subtle_weight),
            init=_init("--garden-init", config.garden_init, "garden", 4, config, repository, work, neck_train.images),
        )
        torch.save(garden.state_dict(), work / "garden.pt")
    history = {"fracture": fracture_history, "garden": garden_history}
    history_path = work / "history.json"
    if history_path.exists():  # a model not retrained keeps its history from the earlier run in ``work``;
        earlier = json.loads(history_path.read_text())  # one continued from its own checkpoint there extends it
        continued = {"fracture": config.fracture_init == "fracture", "garden": config.garden_init == "garden"}
        # (the keyword, not a path: a checkpoint given by path starts a new history)
        history = {
            name: (earlier.get(name, []) if continued[name] or not runs else []) + runs
            for name, runs in history.items()
        }
    history_path.write_text(json.dumps(history))
    return export_checkpoints(config, repository, work)


def crop_cache(work: Path, split: str, size: int, generator: int = 1) -> Path:
    """Where a split's crops are kept in ``work``: one file per input size and phantom generator, so a
    run at another size (the progressive-resizing stage of ``scripts/dev train``) or from the other
    generator shares the work folder without regenerating or overwriting the other's crops."""
    return work / (f"{split}-{size}.npz" if generator == 1 else f"{split}-{size}-v{generator}.npz")


def _init(
    flag: str,
    value: str,
    name: str,
    classes: int,
    config: TrainConfig,
    repository: Path,
    work: Path,
    images: np.ndarray,
) -> Path | None:
    """The checkpoint model ``name`` starts from: for ``"repository"``, the model served from
    ``repository`` rebuilt from its ONNX (:mod:`~cds_service.training.onnx_import`, batch-norm
    statistics from up to 512 of its training crops ``images``) and saved as
    ``work/<name>-from-repository.pt``; anything else as :func:`_checkpoint`."""
    if value != "repository":
        return _checkpoint(flag, value, work)
    from cds_service.inference.triton_server import latest_model_file
    from cds_service.training.evaluation.onnx_model import served_model_info
    from cds_service.training.onnx_import import state_dict_from_onnx

    served = latest_model_file(repository, name)
    if not served.exists():
        raise FileNotFoundError(f"{flag} repository: no {name} model at {served}")
    served_info = served_model_info(repository, name)  # the service's reader of config.pbtxt
    stored_size = served_info.input_size
    if stored_size != config.input_size:
        raise ValueError(
            f"{flag} repository: the served {name} model takes {stored_size} px crops, this run {config.input_size}"
        )
    # Rebuilt with the served model's own classes: a run with other classes (a two-class model continued
    # as a site-aware one) takes its features and starts a new classifier (model.load_features).
    net = CamNet(create_backbone(config.backbone, len(served_info.class_names) or classes, config.output_stride))
    sample = images[:: max(1, len(images) // 512)][:512]
    path = work / f"{name}-from-repository.pt"
    torch.save(state_dict_from_onnx(net, served, sample), path)
    print(f"{flag}: rebuilt {served} (batch-norm statistics from {len(sample)} training crops) as {path}")
    return path


def _checkpoint(flag: str, value: str, work: Path) -> Path | None:
    """The checkpoint a model starts from: None for "" (from scratch); ``work``'s fracture.pt for
    ``"fracture"`` or garden.pt for ``"garden"`` (the model last trained in this work folder); or the
    path given."""
    if not value:
        return None
    in_work = value in ("fracture", "garden")
    path = work / f"{value}.pt" if in_work else Path(value)
    if not path.exists():
        hint = f" (train the {value} model in --work first)" if in_work else ""
        raise FileNotFoundError(f"{flag}: no checkpoint at {path}{hint}")
    return path


def export_checkpoints(config: TrainConfig, repository: Path, work: Path) -> dict:
    """Calibrate and choose the operating point on the validation split, then export the checkpoints.

    Each model's temperature is fitted on its validation logits (:func:`fit_temperature`); on the
    calibrated fracture probabilities the operating threshold is the one reaching the published
    sensitivity (95.2 %), and Youden's point is stored beside it for the report. A model whose
    ``config.*_epochs`` is 0 is not exported: the one in ``repository`` (same input size, trained by
    an earlier run) is left as it is, so either model can be retrained alone.
    """
    val = CropSet.load(crop_cache(work, "val", config.input_size, config.generator))
    common = {
        "architecture": config.backbone,
        "input_size": config.input_size,
        "training_data": config.training_data,
        "disclaimer": SYNTHETIC_DISCLAIMER if config.training_data == "synthetic-phantoms" else config.disclaimer,
    }
    history_path = work / "history.json"
    summary = {
        "config": asdict(config),
        "history": json.loads(history_path.read_text()) if history_path.exists() else None,
        "fracture": _export_fracture(config, repository, work, val, common)
        if config.fracture_epochs > 0
        else {"kept": str(repository / "fracture")},
        "garden": _export_garden(config, repository, work, val, common)
        if config.garden_epochs > 0
        else {"kept": str(repository / "garden")},
    }
    (work / "training-summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _export_fracture(config: TrainConfig, repository: Path, work: Path, val: CropSet, common: dict) -> dict:
    """Calibrate the fracture model, choose its operating points on ``val``, export it; its summary."""
    classes = fracture_classes(config)
    fracture = CamNet(create_backbone(config.backbone, len(classes), config.output_stride))
    fracture.load_state_dict(torch.load(work / "fracture.pt", weights_only=True))
    logits, _ = predict_logits(fracture.eval(), val.images)
    targets = fracture_targets(val, config.fracture_sites)
    temperature = fit_temperature(logits, targets)
    calibration_prevalence = float(val.fractured.mean())
    prevalence = config.prevalence or calibration_prevalence
    # The thresholds are chosen on the served scale (temperature, then the prior shift), so the
    # service compares like with like; the shift is monotone, so sensitivity and specificity are the same.
    shift = prior_shift(prevalence, calibration_prevalence)
    probabilities = calibrate(logits, temperature, shift, list(range(1, len(classes))))
    p_val = 1 - probabilities[:, 0]  # p(fracture): every class but "no fracture"/"none"
    threshold, sensitivity, specificity = sensitivity_threshold(val.fractured, p_val)
    youden, youden_sensitivity, youden_specificity = youden_threshold(val.fractured, p_val)
    high, high_sensitivity, high_specificity = specificity_threshold(val.fractured, p_val)
    export_model(
        fracture.eval(),
        repository,
        "fracture",
        ExportMetadata(
            classes,
            operating_threshold=threshold,
            sensitivity=sensitivity,
            specificity=specificity,
            temperature=temperature,
            calibration_prevalence=calibration_prevalence,
            prevalence=prevalence,
            high_specificity_threshold=high,
            high_specificity_sensitivity=high_sensitivity,
            high_specificity_specificity=high_specificity,
            extra={
                "train_config": json.dumps(asdict(config)),
                "operating_point": f"sensitivity >= {PUBLISHED_SENSITIVITY} on validation",
                "youden_threshold": f"{youden:.6f}",
                "youden_sensitivity": f"{youden_sensitivity:.6f}",
                "youden_specificity": f"{youden_specificity:.6f}",
            },
            **common,
        ),
    )
    return {
        "temperature": temperature,
        "calibration_prevalence": calibration_prevalence,
        "prevalence": prevalence,
        "threshold": threshold,
        "val_sensitivity": sensitivity,
        "val_specificity": specificity,
        "youden_threshold": youden,
        "youden_sensitivity": youden_sensitivity,
        "youden_specificity": youden_specificity,
        "high_specificity_threshold": high,
        "high_specificity_sensitivity": high_sensitivity,
        "high_specificity_specificity": high_specificity,
        "val_auc": roc_auc(val.fractured, p_val),
        "val_nll_before": nll(logits, targets),
        "val_nll_after": nll(logits, targets, temperature),
        **({"val_site_accuracy": site_accuracy(probabilities, targets)} if config.fracture_sites else {}),
    }


def _export_garden(config: TrainConfig, repository: Path, work: Path, val: CropSet, common: dict) -> dict:
    """Calibrate the Garden model on ``val``'s femoral-neck fractures, export it; its summary."""
    neck = val.subset(val.garden >= 0)
    garden = CamNet(create_backbone(config.backbone, 4, config.output_stride))
    garden.load_state_dict(torch.load(work / "garden.pt", weights_only=True))
    logits, _ = predict_logits(garden.eval(), neck.images)
    temperature = fit_temperature(logits, neck.garden) if len(neck) else 1.0
    export_model(
        garden.eval(),
        repository,
        "garden",
        ExportMetadata(
            GARDEN_CLASSES, temperature=temperature, extra={"train_config": json.dumps(asdict(config))}, **common
        ),
    )
    return {
        "temperature": temperature,
        "val_accuracy": float((logits.argmax(1) == neck.garden).mean()) if len(neck) else None,
    }
