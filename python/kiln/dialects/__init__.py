"""Python op classes of Kiln's dialects, generated from their ODS definitions."""
