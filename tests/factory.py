"""Small DICOM objects for unit tests (any pixels, any photometric/bit depth/transfer syntax).

Anatomically plausible radiographs come from ``cds_service.training.phantoms``; these are for
testing the decoder's handling of the DICOM encoding itself.
"""

from __future__ import annotations

import datetime

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def radiograph(
    pixels: np.ndarray,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    orientation: tuple[str, str] | None = ("L", "F"),
    signed: bool = False,
    **attributes: object,
) -> pydicom.Dataset:
    """A DX For Presentation dataset around ``pixels`` (uint or int array, 2-D)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "PELVIS"
    ds.PatientID = "test-patient"
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.StudyTime = "101500"
    if orientation is not None:
        ds.PatientOrientation = list(orientation)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (8, True): np.int8, (16, True): np.int16}[
        (ds.BitsAllocated, signed)
    ]
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def ramp(rows: int = 128, cols: int = 256, bits: int = 12) -> np.ndarray:
    """A left-to-right intensity ramp over the full stored range."""
    return np.tile(np.linspace(0, (1 << bits) - 1, cols).round().astype(np.int64), (rows, 1))
