"""Pythia8 + FastJet jet generation into JetClass-schema ROOT files (the optional `gen` extra).

Flow: Pythia8 events at 14 TeV (showers, MPI and hadronization on; particles with c*tau > 10 mm
kept stable) -> anti-kT R=0.8 jets from all visible final-state particles -> up to the two
leading jets per event, kept when pt_min < pT < pt_max and |eta| < eta_max -> truth matching
(per class) -> JetClass branches. There is no detector simulation: particles are the generator's
stable particles, impact parameters are straight-line extrapolations from the production vertex
and their errors are 0.

Each class is one entry of `PROCESSES` (`processes`): its Pythia settings and its truth-matching
rule (`truth`). Work is split into blocks of `block_size` jets (`blocks`); block k of class c runs
its own Pythia instance seeded from (seed, c, k), so the jets do not depend on how many worker
processes ran the blocks (`driver`). `branches` computes the JetClass branches of a block, with the
jet axis, part_deta and part_dphi from `jettag.features.kinematics`; `writer` writes the ROOT files;
`backends` imports pythia8mc and fastjet; `cli` is jettag-generate.
"""

from jettag.generate.driver import GeneratedJets, generate_jets
from jettag.generate.processes import PROCESSES
from jettag.generate.writer import write_jetclass_root

__all__ = ["PROCESSES", "GeneratedJets", "generate_jets", "write_jetclass_root"]
