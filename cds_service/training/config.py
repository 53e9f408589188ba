"""The training configuration and class names, importable without torch.

``cds-service`` builds its parser from these defaults, and ``serve``/``demo`` run on the base
install (no torch), so nothing here may import the ``[train]`` extra. The defaults are a quick
recipe (the tiny ResNet, both models in about half an hour); the shipped models' flags are in
``scripts/dev train`` (each model's ``config.pbtxt`` holds the ``train_config`` it was trained with).
"""

from __future__ import annotations

from dataclasses import dataclass

FRACTURE_CLASSES = ("no_fracture", "fracture")
#: A site-aware fracture model (``--fracture-sites``): no fracture, femoral-neck (Garden-stageable) or
#: trochanteric (AO/OTA 31-A) fracture. p(fracture) is the sum of the two site classes; the service
#: names the site and stages Garden only for a confident femoral-neck call (findings.fracture_site).
FRACTURE_SITE_CLASSES = ("none", "femoral_neck", "trochanteric")
GARDEN_CLASSES = ("garden_I", "garden_II", "garden_III", "garden_IV")


@dataclass
class TrainConfig:
    """Everything that determines the shipped weights (stored next to them)."""

    # The defaults are a quick recipe: timm's tiny ResNet (0.37 M parameters) at 256 with the last
    # stage dilated (output stride 16: a 16×16 heat map); it shipped until 2026-12. Both shipped models
    # are TinyNet-E (EfficientNet-B0 scaled to width 0.51 / depth 0.6): the fracture model with box
    # guidance, the Garden model started from the fracture model's features. `scripts/dev train` runs
    # both recipes; each model's config.pbtxt holds its `train_config`. efficientnet_b4 at 380
    # (Study A, GPU) is one flag away.
    backbone: str = "test_resnet"
    input_size: int = 256
    output_stride: int = 16  # dilates the last stage: 16×16 heat map at 256 (32: 8×8)
    train_studies: int = 2500
    val_studies: int = 400
    fracture_epochs: int = 8
    garden_epochs: int = 12
    subtle_weight: float = 2.0  # loss weight of Garden I and AO A1 crops (the faint lines); 1 = unweighted
    batch_size: int = 32
    learning_rate: float = 2e-3
    # Stabilisers for deeper from-scratch backbones (EfficientNet/TinyNet start with large logits and
    # gradient norms of 10–20): a zero-initialised classifier starts every crop at chance, and the
    # gradient norm is clipped. Off in the defaults (the tiny ResNet needs neither).
    zero_init_head: bool = False
    clip_grad_norm: float = 0.0  # 0 = off
    # Box guidance of the fracture model's heat map (training.guidance): the weight of the term that
    # puts the map's mass in the fracture box (fractures) and off the proximal femur (non-fractures).
    # 0 = off (image labels only, as the seeds train).
    cam_box_weight: float = 0.0
    # Where the Garden model starts: "" = from scratch (random weights); "fracture" = the fracture
    # model's checkpoint in the work folder (fracture.pt): every weight but the classifier is copied, so
    # staging starts from features that already find and localise fracture lines; "garden" = the work
    # folder's garden.pt, whole (a fine-tune, e.g. at a larger input size); "repository" = the Garden
    # model served from the repository, rebuilt from its ONNX (training.onnx_import: a fresh clone
    # continues the shipped model without the work folder); or the path of a checkpoint with the same
    # backbone.
    garden_init: str = ""
    # A checkpoint the fracture model continues from, whole (a fine-tune): "" = from scratch,
    # "fracture" = the work folder's fracture.pt, "repository" = the served model (as for garden_init),
    # or a path. The shipped models are fine-tuned at 384 from
    # the ones trained at 256 (progressive resizing, `scripts/dev train`). zero_init_head applies only
    # to a new classifier: one loaded with its checkpoint is kept.
    fracture_init: str = ""
    # The share of fractured hips the served p(fracture) is calibrated for. The temperature is fitted on
    # the validation split; its own share (45 % for the phantoms: 9 studies in 10 have a fractured hip)
    # is a property of the generator, not of a clinic, so the export shifts the calibrated log-odds to
    # this share (domain.prior_shift) and chooses the thresholds on that scale. 0 = the validation's own.
    prevalence: float = 0.0
    # The fracture model's head: False = two classes (FRACTURE_CLASSES), True = the fracture site as well
    # (FRACTURE_SITE_CLASSES): femoral-neck labels (Garden I–IV) → femoral_neck, AO 31-A → trochanteric.
    fracture_sites: bool = False
    # The phantom generator the crops are rendered with (dataset.GENERATORS): 1 the 2-D cartoon,
    # 2 radiographs from 3-D anatomy. Caches are per generator (crop_cache).
    generator: int = 1
    seed: int = 20261122
    threads: int = 2
    training_data: str = "synthetic-phantoms"  # anything else: describe the real data set
    disclaimer: str = "Research use only; not cleared for clinical use."  # used when training_data is real
