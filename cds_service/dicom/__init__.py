"""DICOM: DICOMweb retrieval, decoding (PS3.4 grey-scale pipeline) and hip preprocessing."""
