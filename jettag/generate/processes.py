"""The generated classes: Pythia settings shared by all, and one `ProcessSpec` per JetClass class in
`PROCESSES` (hard process, forced decays, pTHat window, truth-matching rule from `truth`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jettag.errors import ConfigError
from jettag.generate.truth import (
    Decay,
    hadronic_top_decays,
    higgs_to_four_quarks,
    is_quark,
    leptonic_top_decays,
    semileptonic_higgs_decays,
    two_body_decays,
)
from jettag.jetclass import JETCLASS_CLASSES

SQRT_S = 14000.0  # GeV
JET_RADIUS = 0.8  # anti-kT R of the jets, and of the truth matching's dR < R

# Pythia settings shared by every class. Showers, MPI and hadronization stay at their defaults (on).
COMMON_SETTINGS = (
    "Print:quiet = on",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Next:numberCount = 0",
    "Next:numberShowLHA = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0",
    f"Beams:eCM = {SQRT_S:g}",
    "ParticleDecays:limitTau0 = on",  # particles with c*tau > 10 mm reach the detector: keep them stable
    "ParticleDecays:tau0Max = 10",
    "Random:setSeed = on",
)


@dataclass(frozen=True)
class ProcessSpec:
    """How one JetClass class is generated: Pythia settings plus a truth-matching rule.

    `decays(event)` lists the decays a jet may be matched to (see `Decay`); None means no
    matching (every jet in the window is kept). The generated pTHat window is
    [max(pt_min - margin, pt_min / 2), max(pt_max + margin, pt_max * `pthat_max_scale`)] with
    margin = `pthat_margin`. A class whose jets miss a neutrino needs the larger top: its jet holds
    only part of the parent's pT, so a jet near pt_max can come from a parent (pT ~ pTHat) well above
    pt_max + margin, and cutting those would keep mostly jets whose neutrino is soft.
    `decay_filter` holds `ResonanceDecayFilter:*` settings: when given, Pythia's
    ResonanceDecayFilterHook redoes the resonance decays of each hard process (kept as it is) until
    they match, for mixed final states that `onMode` switches cannot force (Hqql).
    A new class (e.g. Wqq, Hbb) is one more entry in `PROCESSES`.
    """

    name: str
    settings: tuple[str, ...]
    decays: Callable[[Any], list[Decay]] | None = None
    pthat_margin: float = 100.0
    description: str = ""
    decay_filter: tuple[str, ...] = ()
    pthat_max_scale: float = 0.0

    @property
    def label(self) -> str:
        return f"label_{self.name}"

    def pythia_settings(self, pt_min: float, pt_max: float) -> list[str]:
        pthat_min = max(pt_min - self.pthat_margin, 0.5 * pt_min)
        pthat_max = min(max(pt_max + self.pthat_margin, self.pthat_max_scale * pt_max), 0.5 * SQRT_S)
        return [
            *COMMON_SETTINGS,
            *self.settings,
            *self.decay_filter,
            f"PhaseSpace:pTHatMin = {pthat_min:g}",
            f"PhaseSpace:pTHatMax = {pthat_max:g}",
        ]


# Hard processes. Boosted bosons come from V+jet and H+jet production: the boson recoils against a
# parton with pT ~ pTHat, so a pTHat window around the jet window gives boosted bosons in it.
TTBAR = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on")
W_JET = ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on")
Z_JET = ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2")
H_JET = (
    "HiggsSM:gg2Hg(l:t) = on",
    "HiggsSM:qg2Hq(l:t) = on",
    "HiggsSM:qqbar2Hg(l:t) = on",
    "25:onMode = off",
)
W_TO_QUARKS = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")
W_TO_LEPTONS = ("24:onMode = off", "24:onIfAny = 11 13 15")
# H -> W W* with exactly one W -> l nu (l = e, mu, tau) and the other W -> q q': `onMode` switches act
# on every W alike (or on W+ / W- alike), so both W decay freely to quarks or leptons and the filter
# redoes the two W decays (same hard process, same H) until the four W daughters are exactly two
# quarks (u d s c b), one charged lepton and one neutrino. Both charge assignments (W+ -> l+ nu with
# W- -> q q', and the opposite) then come out as often as Pythia makes them, about half each.
# Lists take commas and no spaces: Pythia reads "1 1 11 12" (or "1, 1, ...") as a shorter list.
SEMILEPTONIC_WW_FILTER = (
    "ResonanceDecayFilter:filter = on",
    "ResonanceDecayFilter:mothers = 24",
    "ResonanceDecayFilter:daughters = 1,1,11,12",
    "ResonanceDecayFilter:exclusive = on",
    "ResonanceDecayFilter:udscbAsEquivalent = on",
    "ResonanceDecayFilter:eMuTauAsEquivalent = on",
    "ResonanceDecayFilter:allNuAsEquivalent = on",
)

# One entry per class: process, forced decays, truth-matching rule (the `decays` function's docstring
# or the rule below). A jet of a class with a rule is kept only when the rule's decay products all lie
# within dR(eta, phi) < R = 0.8 of the jet axis; jets in the window that match nothing are counted
# as `unmatched` and dropped. The partons are taken right after the decay (daughters of the last copy
# of the decaying particle), before they shower.
#   QCD   pp -> jj (HardQCD:all): no matching, every leading jet in the window.
#   Tbqq  pp -> t tbar, W -> q q': b and both W quarks matched (hadronic_top_decays).
#   Tbl   pp -> t tbar, W -> l nu (l = e, mu, tau): b and the charged lepton matched (leptonic_top_decays).
#   Wqq   pp -> W + jet, W -> q q', 60 < m_W < 100 GeV: both quarks matched.
#   Zqq   pp -> Z + jet (Z only, no gamma*), Z -> q qbar (u d s c b), 71 < m_Z < 111 GeV: both quarks matched.
#   Hbb   pp -> H + jet (gg, qg, q qbar, top loop resolved), H -> b bbar: both b quarks matched.
#   Hcc   the same, H -> c cbar: both c quarks matched.
#   Hgg   the same, H -> g g: both gluons matched.
#   H4q   the same, H -> W W*, both W -> q q': the four quarks matched (higgs_to_four_quarks).
#   Hqql  the same, H -> W W*, one W -> l nu (e, mu, tau), the other W -> q q' (SEMILEPTONIC_WW_FILTER):
#         both quarks and the charged lepton (the tau before it decays) matched (semileptonic_higgs_decays).
PROCESSES: dict[str, ProcessSpec] = {
    spec.name: spec
    for spec in (
        ProcessSpec(
            "Tbqq",
            (*TTBAR, *W_TO_QUARKS),
            decays=hadronic_top_decays,
            description="pp -> t tbar, W -> q q' forced; jets matched to t -> b q q'",
        ),
        ProcessSpec("QCD", ("HardQCD:all = on",), description="pp -> jj (HardQCD:all), no matching"),
        ProcessSpec(
            "Tbl",
            (*TTBAR, *W_TO_LEPTONS),
            decays=leptonic_top_decays,
            description="pp -> t tbar, W -> l nu forced; jets matched to the b and the charged lepton",
        ),
        ProcessSpec(
            "Wqq",
            (*W_JET, *W_TO_QUARKS, "24:mMin = 60", "24:mMax = 100"),
            decays=two_body_decays(24, is_quark),
            description="pp -> W + jet, W -> q q' forced; jets matched to both quarks",
        ),
        ProcessSpec(
            "Zqq",
            (*Z_JET, "23:onMode = off", "23:onIfAny = 1 2 3 4 5", "23:mMin = 71", "23:mMax = 111"),
            decays=two_body_decays(23, is_quark),
            description="pp -> Z + jet, Z -> q qbar forced; jets matched to both quarks",
        ),
        ProcessSpec(
            "Hbb",
            (*H_JET, "25:onIfMatch = 5 -5"),
            decays=two_body_decays(25, lambda p: p.idAbs() == 5),
            description="pp -> H + jet, H -> b bbar forced; jets matched to both b quarks",
        ),
        ProcessSpec(
            "Hcc",
            (*H_JET, "25:onIfMatch = 4 -4"),
            decays=two_body_decays(25, lambda p: p.idAbs() == 4),
            description="pp -> H + jet, H -> c cbar forced; jets matched to both c quarks",
        ),
        ProcessSpec(
            "Hgg",
            (*H_JET, "25:onIfMatch = 21 21"),
            decays=two_body_decays(25, lambda p: p.idAbs() == 21),
            description="pp -> H + jet, H -> g g forced; jets matched to both gluons",
        ),
        ProcessSpec(
            "H4q",
            (*H_JET, "25:onIfMatch = 24 -24", *W_TO_QUARKS),
            decays=higgs_to_four_quarks,
            description="pp -> H + jet, H -> W W* -> 4 quarks forced; jets matched to the four quarks",
        ),
        ProcessSpec(
            "Hqql",
            (*H_JET, "25:onIfMatch = 24 -24", "24:onMode = off", "24:onIfAny = 1 2 3 4 5 11 13 15"),
            decays=semileptonic_higgs_decays,
            description="pp -> H + jet, H -> W W* -> l nu q q' forced; jets matched to the charged lepton and "
            "both quarks",
            decay_filter=SEMILEPTONIC_WW_FILTER,
            # the neutrino takes 14% of the H's pT on average, up to about half: of 300 matched jets in
            # 550-650 GeV generated with pTHat up to 2 TeV, 23% came from pTHat > 750 = pt_max + margin
            # (Hbb: 4%) and 0.3% from pTHat > 1300 = 2 pt_max
            pthat_max_scale=2.0,
        ),
    )
}
# The classes in JetClass order (label_* branches), for --classes all: all ten.
GENERATED_CLASSES = tuple(name for name in JETCLASS_CLASSES if name in PROCESSES)


def resolve_classes(classes: Sequence[str] | str) -> list[ProcessSpec]:
    if isinstance(classes, str):
        classes = [classes]
    classes = list(classes)
    if classes == ["all"]:
        classes = list(GENERATED_CLASSES)
    if not classes:
        raise ConfigError(f"no class given; choose one or more of {', '.join(GENERATED_CLASSES)}, or all.")
    specs = []
    for name in classes:
        if name not in PROCESSES:
            raise ConfigError(f"unknown class '{name}'; choose from {', '.join(GENERATED_CLASSES)} or all.")
        if name in (s.name for s in specs):
            raise ConfigError(f"the class '{name}' is listed twice; list each class once.")
        specs.append(PROCESSES[name])
    return specs
