"""Simulated meters on a real feeder (BDEW load, clear-sky PV, EV, battery; V and θ from a
HELM load flow), for demos, tests and benchmarks."""
