"""The generator's anti-kT (Pythia's SlowJet in its fjcore mode, run in C++ on the event record)
against the fastjet package clustering the same visible final state from Python: same leading
jets, same constituents."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

import fastjet

from jettag.generate.blocks import BlockTask, JetWindow, _make_pythia, leading_jets, make_jet_finder
from jettag.generate.processes import PROCESSES


def _fastjet_leading(event, radius, n_jets=2):
    """Reference: every final, visible particle as a PseudoJet, anti-kT, the n hardest jets as
    (pt, eta, sorted event indices)."""
    inputs = []
    for i in range(event.size()):
        p = event[i]
        if p.isFinal() and p.isVisible():
            pseudojet = fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e())
            pseudojet.set_user_index(i)
            inputs.append(pseudojet)
    sequence = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = fastjet.sorted_by_pt(sequence.inclusive_jets(0.0))[:n_jets]
    return [(j.pt(), j.eta(), sorted(c.user_index() for c in j.constituents())) for j in jets]


@pytest.mark.parametrize("process", ["QCD", "Tbl"])
def test_same_jets_as_fastjet(process):
    window = JetWindow()
    pythia, _hook = _make_pythia(PROCESSES[process], BlockTask(process, 0, 1, 12345, window))
    finder = make_jet_finder(window.radius)
    compared = 0
    for _ in range(6):
        assert pythia.next()
        ours = leading_jets(finder, pythia.event)
        reference = _fastjet_leading(pythia.event, window.radius)
        assert len(ours) == len(reference) == 2
        for (pt, eta, indices), (ref_pt, ref_eta, ref_indices) in zip(ours, reference, strict=True):
            assert indices == ref_indices
            np.testing.assert_allclose([pt, eta], [ref_pt, ref_eta], rtol=1e-9, atol=1e-9)
            compared += 1
    assert compared == 12
