"""The phantom radiographs the demo, the tests and training write are valid CR / DX IODs.

Every site profile is written at its own size, bit depth, photometric interpretation and transfer
syntax and checked with dciodvfy. The DX header's VOI LUT is the one attribute the decoder reads:
it must leave the decoded pixels (what the models are trained on) exactly as they were.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pydicom
import pytest

from cds_service.dicom.decode import decode_dataset
from cds_service.training.phantoms import SITES, draw_acquisition, render, to_dataset, write_sample_study
from tests.dicom.dciodvfy import validate

IOD = {"CR": "CRImage", "DX": "DXImageForPresentation"}


@pytest.mark.slow
@pytest.mark.parametrize("site", list(SITES))
def test_every_site_profile_passes_dciodvfy(tmp_path, site):
    path = write_sample_study(tmp_path, seed=7, site=site)
    validation = validate(path)
    assert validation.iod == IOD[SITES[site].modality]
    assert not validation.errors, validation.errors
    assert not validation.warnings, validation.warnings
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.ReferringPhysicianName == ""  # Type 2: present, empty
    if SITES[site].modality == "DX":
        assert ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.AnatomicRegionSequence[0].CodeValue == "816092008"  # SCT Pelvis (CID 4009)
        assert ds.ViewCodeSequence[0].CodeValue == "399348003"  # SCT antero-posterior (CID 4010)
        assert ds.PresentationLUTShape == ("INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")


def _without_voi(ds: pydicom.Dataset) -> pydicom.Dataset:
    bare = copy.deepcopy(ds)  # Dataset.copy() is shallow: deleting from it deletes from ``ds``
    del bare.VOILUTSequence
    return bare


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dx_voi_lut_leaves_the_decoded_pixels_unchanged(seed):
    """Decoded with or without the DX VOI LUT: the same grey levels, and no pydicom warning."""
    phantom = render(np.random.default_rng(seed), "garden_II", "none")
    for base in (site for site in SITES.values() if site.modality == "DX"):
        drawn = draw_acquisition(base, np.random.default_rng([seed, 7])) if seed else base  # 8–16 bits
        small = dataclasses.replace(drawn, columns=drawn.columns // 8, rows=drawn.rows // 8)
        ds, _ = to_dataset(phantom, small, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with_voi = decode_dataset(ds).grey
        np.testing.assert_array_equal(with_voi, decode_dataset(_without_voi(ds)).grey, err_msg=small.name)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        assert 10 <= descriptor[2] <= 16  # bits per LUT entry (C.8.11.3.1.5)


def test_an_eight_bit_dx_variant_still_uses_a_ten_bit_voi_lut():
    phantom = render(np.random.default_rng(5), "none", "none")
    site = dataclasses.replace(SITES["site-a"], bits=8, columns=400, rows=300, compressed=False)
    ds, _ = to_dataset(phantom, site, 5)
    (item,) = ds.VOILUTSequence
    data = np.frombuffer(item.LUTData, "<u2")
    assert item.LUTDescriptor[2] == 10 and int(data.max()).bit_length() == 10
    np.testing.assert_array_equal(decode_dataset(ds).grey, decode_dataset(_without_voi(ds)).grey)


def test_compressed_phantoms_keep_their_deterministic_uids():
    """Lossless compression must not draw a new SOP Instance UID (the same seed is the same instance)."""
    phantom = render(np.random.default_rng(4), "none", "none")
    for name in ("site-a", "site-b"):  # JPEG 2000 and RLE
        site = dataclasses.replace(SITES[name], columns=256, rows=200)
        one, _ = to_dataset(phantom, site, 4)
        two, _ = to_dataset(phantom, site, 4)
        assert one.file_meta.TransferSyntaxUID == site.transfer_syntax
        assert one.SOPInstanceUID == two.SOPInstanceUID == one.file_meta.MediaStorageSOPInstanceUID
        assert one.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.1337.")
