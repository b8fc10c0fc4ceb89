"""Prefect orchestration over the eip_al library (see flows/al.py)."""
