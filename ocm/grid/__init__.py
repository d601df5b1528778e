"""The grid model and the batched HELM load flow: a network (pandapower JSON or the native
format) in, voltages, angles and loadings out. Pure computation: no chain, no I/O but
reading network files; imports nothing else of the project."""
