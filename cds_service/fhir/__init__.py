"""FHIR R4: finding the ImagingStudy, and building the DiagnosticReport (fhir.resources R4B)."""
