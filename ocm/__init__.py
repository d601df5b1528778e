"""Optimal capacity management: capacity bands [P_min, P_max] per flexibility from a
DEAP genetic algorithm around the HELM load flow of ``ocm.grid`` (pure computation).

``ocm.oracle`` is the one service module here: it reads meter readings from the chain,
computes the bands and publishes them (it alone imports ``contracts``)."""
