"""Optimal capacity management: grid model and HELM load flow (pure computation)."""
