"""The four lung-ultrasound patterns: the one label contract of the project.

Every table, tensor and figure orders the patterns as in ``PATTERNS``; models emit
logits in this order and predictions CSVs name their columns after it.
"""

PATTERNS: tuple[str, ...] = ("a_lines", "b_lines", "consolidation", "pleural_effusion")

DISPLAY_NAMES: dict[str, str] = {
    "a_lines": "A-lines",
    "b_lines": "B-lines",
    "consolidation": "Consolidation",
    "pleural_effusion": "Pleural effusion",
}

NUM_PATTERNS = len(PATTERNS)

# Columns of the labels CSV (the contract shared by synthetic, POCUS and user data).
REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "path", "patient_id", *PATTERNS)
OPTIONAL_COLUMNS: tuple[str, ...] = ("acquired_on", "probe", "source")

# ImageNet statistics: the paper feeds RGB-normalised frames to ImageNet-pretrained encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
