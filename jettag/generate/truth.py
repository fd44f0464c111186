"""Truth matching: the generator-level decays of an event (one finder per decay) and the rule
that matches a jet to one of them (every required decay product within dR < R of the jet axis)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import vector

from jettag.features.kinematics import relative_coordinates


@dataclass(frozen=True)
class Decay:
    """A generator-level decay a jet can be matched to.

    `genparts` holds one row (pt, eta, phi, mass, pid) per particle stored in the aux_genpart_*
    branches; `required` indexes the rows that must all lie within dR < R of the jet axis.
    """

    genparts: np.ndarray  # (n, 5)
    required: tuple[int, ...]


def _genpart(particle) -> tuple[float, float, float, float, float]:
    return (particle.pT(), particle.eta(), particle.phi(), particle.m(), float(particle.id()))


def _last_copy(event, particle):
    return event[particle.iBotCopyId()]


def _daughters(event, particle) -> list:
    """The daughters of the last copy of `particle` (after recoils, before they shower)."""
    return [event[j] for j in _last_copy(event, particle).daughterList()]


def _first_copies(event, pid: int) -> list:
    """The last copy of every |id| == pid particle in the event, once each."""
    return [event[i] for i in range(event.size()) if event[i].idAbs() == pid and event[i].iBotCopyId() == i]


def is_quark(particle) -> bool:
    return 1 <= particle.idAbs() <= 5


def _is_charged_lepton(particle) -> bool:
    return particle.idAbs() in (11, 13, 15)


def hadronic_top_decays(event) -> list[Decay]:
    """Every t -> b W(-> q q') in the event, as (top, b, W, q, q') rows; b, q, q' must be matched.

    Matching rule (Tbqq): a jet is a top jet when, for one hadronically decaying top, the b quark
    and the two quarks from the W decay all lie within dR(eta, phi) < R of the jet axis. The quarks
    are taken right after the decays: the daughters of the last top copy and of the last W copy
    (after recoils from the shower, before the quarks themselves shower). Jets matching no top are
    discarded and counted.
    """
    return _top_decays(event, leptonic=False)


def leptonic_top_decays(event) -> list[Decay]:
    """Every t -> b W(-> l nu) in the event, as (top, b, W, l, nu) rows; b and l must be matched.

    Matching rule (Tbl): the b quark and the charged lepton (e, mu or tau, the tau before it decays)
    lie within dR < R of the jet axis; the neutrino is invisible and not required.
    """
    return _top_decays(event, leptonic=True)


def _top_decays(event, leptonic: bool) -> list[Decay]:
    decays = []
    for top in _first_copies(event, 6):
        daughters = _daughters(event, top)
        b = next((d for d in daughters if is_quark(d)), None)
        w = next((d for d in daughters if d.idAbs() == 24), None)
        if b is None or w is None:
            continue
        w = _last_copy(event, w)
        products = _daughters(event, w)
        if leptonic:
            lepton = next((p for p in products if _is_charged_lepton(p)), None)
            neutrino = next((p for p in products if p.idAbs() in (12, 14, 16)), None)
            if lepton is None or neutrino is None:
                continue
            rows = np.array([_genpart(p) for p in (top, b, w, lepton, neutrino)])
            decays.append(Decay(rows, required=(1, 3)))
        else:
            quarks = [p for p in products if is_quark(p)]
            if len(quarks) != 2:  # leptonic W decay: not a t -> bqq' candidate
                continue
            rows = np.array([_genpart(p) for p in (top, b, w, *quarks)])
            decays.append(Decay(rows, required=(1, 3, 4)))
    return decays


def two_body_decays(pid: int, accept: Callable[[Any], bool]) -> Callable[[Any], list[Decay]]:
    """Decays X -> a b of the last copies of |id| == pid with both daughters accepted, as (X, a, b) rows."""

    def decays(event) -> list[Decay]:
        found = []
        for boson in _first_copies(event, pid):
            daughters = _daughters(event, boson)
            if len(daughters) != 2 or not all(accept(d) for d in daughters):
                continue
            rows = np.array([_genpart(p) for p in (boson, *daughters)])
            found.append(Decay(rows, required=(1, 2)))
        return found

    return decays


def higgs_to_four_quarks(event) -> list[Decay]:
    """Every H -> W W* -> q q' q q' as (H, W, W, q, q', q, q') rows; all four quarks must be matched.

    Matching rule (H4q): the four quarks from the two W decays (taken at the last W copies) all lie
    within dR < R of the jet axis.
    """
    found = []
    for higgs in _first_copies(event, 25):
        ws = [_last_copy(event, d) for d in _daughters(event, higgs) if d.idAbs() == 24]
        if len(ws) != 2:
            continue
        quarks = [q for w in ws for q in _daughters(event, w)]
        if len(quarks) != 4 or not all(is_quark(q) for q in quarks):
            continue
        rows = np.array([_genpart(p) for p in (higgs, *ws, *quarks)])
        found.append(Decay(rows, required=(3, 4, 5, 6)))
    return found


def semileptonic_higgs_decays(event) -> list[Decay]:
    """Every H -> W W* -> l nu q q' as (H, W -> q q', W -> l nu, q, q', l, nu) rows; q, q', l must be matched.

    Matching rule (Hqql): the two quarks of the hadronic W and the charged lepton of the leptonic W
    (e, mu or tau, the tau before it decays) all lie within dR < R of the jet axis; the neutrino is
    invisible and not required. Why: it is the rule every other class here follows (all quarks and
    charged leptons of the decay inside the jet, as JetClass (arXiv:2202.03772) describes its signal
    jets; the paper's exact wording for H -> l nu q q' could not be checked when this was written),
    with the lepton taken as Tbl takes it, so that a jet labelled Hqql holds the three visible prongs.
    Either W may be the off-shell one and either charge the leptonic one; the decay products are the
    daughters of the last W copies.
    """
    found = []
    for higgs in _first_copies(event, 25):
        ws = [_last_copy(event, d) for d in _daughters(event, higgs) if d.idAbs() == 24]
        if len(ws) != 2:
            continue
        hadronic, leptonic = None, None
        for w in ws:
            products = _daughters(event, w)
            quarks = [p for p in products if is_quark(p)]
            lepton = next((p for p in products if _is_charged_lepton(p)), None)
            neutrino = next((p for p in products if p.idAbs() in (12, 14, 16)), None)
            if len(quarks) == 2:
                hadronic = (w, *quarks)
            elif lepton is not None and neutrino is not None:
                leptonic = (w, lepton, neutrino)
        if hadronic is None or leptonic is None:  # both W -> q q' (H4q) or both W -> l nu
            continue
        w_had, q1, q2 = hadronic
        w_lep, lepton, neutrino = leptonic
        rows = np.array([_genpart(p) for p in (higgs, w_had, w_lep, q1, q2, lepton, neutrino)])
        found.append(Decay(rows, required=(3, 4, 5)))
    return found


def match_decay(decays: Sequence[Decay], jet_eta: float, jet_phi: float, radius: float) -> Decay | None:
    """The first decay whose required particles all lie within dR < radius of the jet axis.

    dR = hypot(deta, dphi), with deta and dphi as the loader computes them (`relative_coordinates`).
    """
    for decay in decays:
        rows = decay.genparts[list(decay.required)]
        partons = vector.array({"pt": rows[:, 0], "eta": rows[:, 1], "phi": rows[:, 2], "mass": rows[:, 3]})
        axis_eta, axis_phi = np.full(len(rows), jet_eta), np.full(len(rows), jet_phi)
        deta, dphi = relative_coordinates(partons, axis_eta, axis_phi)
        if np.all(np.hypot(deta, dphi) < radius):
            return decay
    return None
