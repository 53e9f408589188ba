"""Inference on NVIDIA Triton over gRPC, and the local Triton launcher."""

from cds_service.inference.client import HipInference, ModelInfo, TritonInferenceClient

__all__ = ["HipInference", "ModelInfo", "TritonInferenceClient"]
