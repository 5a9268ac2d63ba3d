//! Structural validation of resources against the R4 StructureDefinitions.
