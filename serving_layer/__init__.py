"""The serving layer: SQL over merged views (batch below the cutoff + speed from it), in DuckDB.

It reads only what the batch and speed layers published, through the shared contracts.
"""
