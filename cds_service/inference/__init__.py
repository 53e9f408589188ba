"""Inference on NVIDIA Triton over gRPC, and the local Triton launcher."""

from cds_service.inference.client import ContractMismatch, HipInference, ModelInfo, TritonInferenceClient

__all__ = ["ContractMismatch", "HipInference", "ModelInfo", "TritonInferenceClient"]
