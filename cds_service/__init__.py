"""hipcad: a CDS Hooks 2.0 service for hip-fracture detection and Garden staging."""

__version__ = "0.1.0"
