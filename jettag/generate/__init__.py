"""Pythia8 + FastJet jet generation into JetClass-schema ROOT files (the optional `gen` extra)."""

from jettag.generate.pythia import PROCESSES, GeneratedJets, generate_jets, write_jetclass_root

__all__ = ["PROCESSES", "GeneratedJets", "generate_jets", "write_jetclass_root"]
