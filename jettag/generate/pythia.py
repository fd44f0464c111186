"""Generate JetClass-schema jets with Pythia8 and FastJet, and write them to ROOT files.

Flow: Pythia8 events at 14 TeV (showers, MPI and hadronization on; particles with c*tau > 10 mm
kept stable) -> anti-kT R=0.8 jets from all visible final-state particles -> up to the two
leading jets per event, kept when pt_min < pT < pt_max and |eta| < eta_max -> truth matching
(per class) -> JetClass branches. There is no detector simulation: particles are the generator's
stable particles, impact parameters are straight-line extrapolations from the production vertex
and their errors are 0.

Each class is one entry of `PROCESSES`: its Pythia settings and its truth-matching rule. Work is
split into blocks of `block_size` jets; block k of class c runs its own Pythia instance seeded from
(seed, c, k), so the jets do not depend on how many worker processes ran the blocks.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import awkward as ak
import numpy as np

from jettag.errors import ConfigError
from jettag.jetclass import JETCLASS_CLASSES
from jettag.jetclass import JETCLASS_LABELS as LABEL_BRANCHES

SQRT_S = 14000.0
JET_RADIUS = 0.8
DEFAULT_BLOCK_SIZE = 50

PARTICLE_FIELDS = (
    "px", "py", "pz", "energy", "deta", "dphi", "d0val", "d0err", "dzval", "dzerr", "charge",
    "isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon",
)  # fmt: skip
JET_BRANCHES = (
    "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles",
    "jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4",
)  # fmt: skip
AUX_FIELDS = ("pt", "eta", "phi", "mass", "pid")
PARTICLE_BRANCHES = tuple(f"part_{name}" for name in PARTICLE_FIELDS)
AUX_BRANCHES = tuple(f"aux_genpart_{name}" for name in AUX_FIELDS)
BRANCHES = PARTICLE_BRANCHES + JET_BRANCHES + LABEL_BRANCHES + AUX_BRANCHES

COMPRESSIONS = ("lzma", "zlib", "zstd", "lz4", "none")

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


def _install_hint(missing: str) -> ConfigError:
    return ConfigError(
        f"jettag-generate needs {missing}, which is not installed; install with pip install 'jettag[gen]'."
    )


def _import_pythia():
    try:
        import pythia8mc
    except ImportError:
        raise _install_hint("pythia8mc") from None
    return pythia8mc


def _import_fastjet():
    try:
        import fastjet
    except ImportError:
        raise _install_hint("fastjet") from None
    return fastjet


def check_generators() -> None:
    """Raise a `ConfigError` naming the missing package when pythia8mc or fastjet is absent."""
    _import_pythia()
    _import_fastjet()


# --------------------------------------------------------------------------------------------
# Truth matching


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


def _is_quark(particle) -> bool:
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
        b = next((d for d in daughters if _is_quark(d)), None)
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
            quarks = [p for p in products if _is_quark(p)]
            if len(quarks) != 2:  # leptonic W decay: not a t -> bqq' candidate
                continue
            rows = np.array([_genpart(p) for p in (top, b, w, *quarks)])
            decays.append(Decay(rows, required=(1, 3, 4)))
    return decays


def _two_body_decays(pid: int, accept: Callable[[Any], bool]) -> Callable[[Any], list[Decay]]:
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
        if len(quarks) != 4 or not all(_is_quark(q) for q in quarks):
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
            quarks = [p for p in products if _is_quark(p)]
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


def _delta_phi(a, b):
    """a - b wrapped into [-pi, pi)."""
    return (np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi


def match_decay(decays: Sequence[Decay], jet_eta: float, jet_phi: float, radius: float) -> Decay | None:
    """The first decay whose required particles all lie within dR < radius of the jet axis."""
    for decay in decays:
        rows = decay.genparts[list(decay.required)]
        dr = np.hypot(rows[:, 1] - jet_eta, _delta_phi(rows[:, 2], jet_phi))
        if np.all(dr < radius):
            return decay
    return None


# --------------------------------------------------------------------------------------------
# Classes


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
            decays=_two_body_decays(24, _is_quark),
            description="pp -> W + jet, W -> q q' forced; jets matched to both quarks",
        ),
        ProcessSpec(
            "Zqq",
            (*Z_JET, "23:onMode = off", "23:onIfAny = 1 2 3 4 5", "23:mMin = 71", "23:mMax = 111"),
            decays=_two_body_decays(23, _is_quark),
            description="pp -> Z + jet, Z -> q qbar forced; jets matched to both quarks",
        ),
        ProcessSpec(
            "Hbb",
            (*H_JET, "25:onIfMatch = 5 -5"),
            decays=_two_body_decays(25, lambda p: p.idAbs() == 5),
            description="pp -> H + jet, H -> b bbar forced; jets matched to both b quarks",
        ),
        ProcessSpec(
            "Hcc",
            (*H_JET, "25:onIfMatch = 4 -4"),
            decays=_two_body_decays(25, lambda p: p.idAbs() == 4),
            description="pp -> H + jet, H -> c cbar forced; jets matched to both c quarks",
        ),
        ProcessSpec(
            "Hgg",
            (*H_JET, "25:onIfMatch = 21 21"),
            decays=_two_body_decays(25, lambda p: p.idAbs() == 21),
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


# --------------------------------------------------------------------------------------------
# One block of jets


@dataclass(frozen=True)
class JetWindow:
    pt_min: float = 550.0
    pt_max: float = 650.0
    eta_max: float = 2.0
    radius: float = JET_RADIUS

    def check(self) -> None:
        if not (math.isfinite(self.pt_min) and math.isfinite(self.pt_max)) or self.pt_min < 0:
            raise ConfigError(
                f"pt_min={self.pt_min:g} and pt_max={self.pt_max:g} must be finite and >= 0 GeV."
            )
        if self.pt_min >= self.pt_max:
            raise ConfigError(f"pt_min={self.pt_min:g} must be below pt_max={self.pt_max:g}.")
        if self.pt_min >= 0.5 * SQRT_S:
            raise ConfigError(f"pt_min={self.pt_min:g} GeV is out of reach at sqrt(s) = {SQRT_S:g} GeV.")
        if not self.eta_max > 0:
            raise ConfigError(f"eta_max={self.eta_max:g} must be positive.")

    def contains(self, pt: float, eta: float) -> bool:
        return self.pt_min < pt < self.pt_max and abs(eta) < self.eta_max


@dataclass
class ClassStats:
    """Counters for one class: events generated, jets kept and jets rejected."""

    jets: int = 0
    events: int = 0
    outside_window: int = 0  # leading-two jets outside the pT / |eta| window
    unmatched: int = 0  # jets in the window that failed truth matching
    failed_events: int = 0  # pythia.next() failures (skipped)
    cpu_seconds: float = 0.0  # summed wall time of the blocks (per-core cost)

    def add(self, other: ClassStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def unmatched_fraction(self) -> float:
        tried = self.jets + self.unmatched
        return self.unmatched / tried if tried else 0.0

    @property
    def jets_per_second(self) -> float:
        return self.jets / self.cpu_seconds if self.cpu_seconds else 0.0


@dataclass(frozen=True)
class BlockTask:
    process: str
    index: int
    n_jets: int
    pythia_seed: int
    window: JetWindow


@dataclass
class BlockResult:
    task: BlockTask
    arrays: dict[str, Any]
    stats: ClassStats = field(default_factory=ClassStats)


def block_seed(seed: int, process: str, index: int) -> int:
    """Pythia seed (1..900000000) of one block, from the user seed, the class name and the block index."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(process.encode()), index])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] % 900_000_000) + 1


_FASTJET_QUIET = False


def _silence_fastjet_banner(fastjet) -> None:
    """FastJet prints its banner on stdout at the first clustering of a process: do that one into /dev/null."""
    global _FASTJET_QUIET
    if _FASTJET_QUIET:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, JET_RADIUS)
        fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], jet_def).inclusive_jets()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _FASTJET_QUIET = True


def _make_pythia(spec: ProcessSpec, task: BlockTask):
    """An initialised Pythia for one block, and its user hook (None, or the decay filter: keep it alive)."""
    pythia8mc = _import_pythia()
    pythia = pythia8mc.Pythia("", False)
    hook = None
    if spec.decay_filter:
        # made before the settings are read: the hook declares ResonanceDecayFilter:* anew, with defaults
        hook = pythia8mc.ResonanceDecayFilterHook(pythia.settings)
        pythia.setUserHooksPtr(hook)
    for line in [
        *spec.pythia_settings(task.window.pt_min, task.window.pt_max),
        f"Random:seed = {task.pythia_seed}",
    ]:
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting '{line}'")
    if not pythia.init():
        raise ConfigError(
            f"Pythia could not initialise the {spec.name} process for {task.window.pt_min:g} < pT < "
            f"{task.window.pt_max:g} GeV; choose a pT window within reach at {SQRT_S / 1000:g} TeV."
        )
    return pythia, hook


# columns of the per-event particle table
PX, PY, PZ, E, PID, CHARGE, X, Y, Z = range(9)


def _visible_final_state(event) -> np.ndarray:
    """(n, 9) table of the visible final-state particles: px py pz E id charge x y z (GeV, mm)."""
    rows = []
    for i in range(event.size()):
        p = event[i]
        if p.isFinal() and p.isVisible():  # isVisible drops neutrinos (and other invisibles)
            rows.append((p.px(), p.py(), p.pz(), p.e(), p.id(), p.charge(), p.xProd(), p.yProd(), p.zProd()))
    return np.array(rows, dtype=np.float64).reshape(-1, 9)


def _leading_jets(fastjet, jet_def, particles: np.ndarray, n_jets: int = 2) -> list[np.ndarray]:
    """Constituent row indices of the `n_jets` highest-pT anti-kT jets."""
    inputs = []
    for index, row in enumerate(particles[:, :4].tolist()):
        pseudojet = fastjet.PseudoJet(*row)
        pseudojet.set_user_index(index)
        inputs.append(pseudojet)
    sequence = fastjet.ClusterSequence(inputs, jet_def)
    jets = fastjet.sorted_by_pt(sequence.inclusive_jets(0.0))[:n_jets]
    return [np.array(sorted(c.user_index() for c in jet.constituents()), dtype=np.int64) for jet in jets]


def _four_vector_summary(p4: np.ndarray) -> tuple[float, float, float]:
    """pt, eta, phi of the sum of the rows of an (n, >=4) px py pz E table."""
    px, py, pz = p4[:, PX].sum(), p4[:, PY].sum(), p4[:, PZ].sum()
    pt = math.hypot(px, py)
    return pt, math.asinh(pz / pt) if pt > 0 else math.copysign(1e9, pz), math.atan2(py, px)


def run_block(task: BlockTask) -> BlockResult:
    """Generate events until `task.n_jets` jets pass the window (and the truth matching)."""
    start = time.perf_counter()
    spec = PROCESSES[task.process]
    fastjet = _import_fastjet()
    _silence_fastjet_banner(fastjet)
    pythia, _hook = _make_pythia(spec, task)  # the hook (if any) must outlive the events
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, task.window.radius)
    stats = ClassStats()
    constituents: list[np.ndarray] = []
    genparts: list[np.ndarray] = []
    max_events = 1000 * task.n_jets + 5000
    consecutive_failures = 0
    while len(constituents) < task.n_jets:
        if stats.events >= max_events:
            raise ConfigError(
                f"only {len(constituents)} of {task.n_jets} {spec.name} jets passed {task.window.pt_min:g} < pT < "
                f"{task.window.pt_max:g} GeV, |eta| < {task.window.eta_max:g} in {stats.events} events; widen the window."
            )
        if not pythia.next():
            stats.failed_events += 1
            consecutive_failures += 1
            if consecutive_failures > 100:
                raise RuntimeError(f"Pythia failed 100 events in a row for class {spec.name}")
            continue
        consecutive_failures = 0
        stats.events += 1
        particles = _visible_final_state(pythia.event)
        decays = None  # found only for events with a jet in the window
        for indices in _leading_jets(fastjet, jet_def, particles):
            jet_particles = particles[indices]
            pt, eta, phi = _four_vector_summary(jet_particles)
            if not task.window.contains(pt, eta):
                stats.outside_window += 1
                continue
            if spec.decays is not None:
                if decays is None:
                    decays = spec.decays(pythia.event)
                decay = match_decay(decays, eta, phi, task.window.radius)
                if decay is None:
                    stats.unmatched += 1
                    continue
                genparts.append(decay.genparts)
            else:
                genparts.append(np.zeros((0, len(AUX_FIELDS))))
            constituents.append(jet_particles)
            if len(constituents) == task.n_jets:
                break
    stats.jets = len(constituents)
    arrays = jet_arrays(constituents, genparts, spec.label)
    arrays.update(substructure(constituents, task.window.radius))
    stats.cpu_seconds = time.perf_counter() - start
    return BlockResult(task, arrays, stats)


# --------------------------------------------------------------------------------------------
# JetClass branches


def jet_arrays(
    constituents: Sequence[np.ndarray], genparts: Sequence[np.ndarray], label: str
) -> dict[str, Any]:
    """JetClass branches (all but jet_sdmass and jet_tau*) from per-jet particle tables.

    The jet four-vector is the sum of its constituents (anti-kT E-scheme). Impact parameters are
    the straight-line ones, from the particle's production vertex, w.r.t. the beam line through
    the origin: d0 = (x py - y px) / pT, dz = z - (x px + y py) pz / pT^2 (mm; 0 for neutrals).
    """
    counts = np.array([len(c) for c in constituents], dtype=np.int64)
    n_jets = len(counts)
    ordered = []
    for table in constituents:
        pt = np.hypot(table[:, PX], table[:, PY])
        ordered.append(table[np.argsort(-pt, kind="stable")])
    flat = np.concatenate(ordered) if ordered else np.zeros((0, 9))
    px, py, pz, energy = flat[:, PX], flat[:, PY], flat[:, PZ], flat[:, E]
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)

    starts = np.cumsum(counts) - counts
    sums = {k: np.add.reduceat(v, starts) if n_jets else np.zeros(0) for k, v in
            dict(px=px, py=py, pz=pz, energy=energy).items()}  # fmt: skip
    jet_pt = np.hypot(sums["px"], sums["py"])
    jet_eta = np.arcsinh(sums["pz"] / jet_pt) if n_jets else np.zeros(0)
    jet_phi = np.arctan2(sums["py"], sums["px"])
    jet_mass = np.sqrt(np.maximum(sums["energy"] ** 2 - jet_pt**2 - sums["pz"] ** 2, 0.0))

    def repeat(x):
        return np.repeat(x, counts)

    sign = np.where(repeat(jet_eta) >= 0, 1.0, -1.0)
    charge = flat[:, CHARGE]
    pid = np.abs(flat[:, PID])
    charged = charge != 0
    x, y, z = flat[:, X], flat[:, Y], flat[:, Z]
    d0 = np.where(charged, (x * py - y * px) / pt, 0.0)
    dz = np.where(charged, z - (x * px + y * py) * pz / pt**2, 0.0)
    is_electron, is_muon, is_photon = pid == 11, pid == 13, pid == 22
    lepton_or_photon = is_electron | is_muon | is_photon
    particle_columns = {
        "px": px,
        "py": py,
        "pz": pz,
        "energy": energy,
        "deta": (eta - repeat(jet_eta)) * sign,
        "dphi": _delta_phi(phi, repeat(jet_phi)),
        "d0val": d0,
        "d0err": np.zeros_like(d0),
        "dzval": dz,
        "dzerr": np.zeros_like(dz),
        "charge": charge,
        "isChargedHadron": charged & ~lepton_or_photon,
        "isNeutralHadron": ~charged & ~lepton_or_photon,
        "isPhoton": is_photon,
        "isElectron": is_electron,
        "isMuon": is_muon,
    }
    arrays: dict[str, Any] = {
        f"part_{name}": ak.unflatten(np.asarray(column, dtype=np.float32), counts)
        for name, column in particle_columns.items()
    }
    jets = dict(pt=jet_pt, eta=jet_eta, phi=jet_phi, energy=sums["energy"], mass=jet_mass, nparticles=counts)
    arrays.update({f"jet_{name}": np.asarray(v, dtype=np.float32) for name, v in jets.items()})
    for branch in LABEL_BRANCHES:
        arrays[branch] = np.full(n_jets, branch == label, dtype=bool)
    aux_counts = np.array([len(g) for g in genparts], dtype=np.int64)
    aux = (
        np.concatenate(genparts).reshape(-1, len(AUX_FIELDS)) if genparts else np.zeros((0, len(AUX_FIELDS)))
    )
    for k, name in enumerate(AUX_FIELDS):
        arrays[f"aux_genpart_{name}"] = ak.unflatten(aux[:, k].astype(np.float32), aux_counts)
    return arrays


def substructure(constituents: Sequence[np.ndarray], radius: float = JET_RADIUS) -> dict[str, np.ndarray]:
    """Soft-drop mass (beta=0, zcut=0.1) and N-subjettiness tau_1..4 (beta=1) with FastJet contrib.

    Soft drop declusters the constituents reclustered with C/A into one jet (R large enough that
    all constituents merge). tau_N uses the normalized measure with R0 = `radius` and N exclusive
    kT subjets as axes (no axis minimisation).
    """
    n_jets = len(constituents)
    if n_jets == 0:
        return {
            name: np.zeros(0, dtype=np.float32)
            for name in ("jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4")
        }
    fastjet = _import_fastjet()
    _silence_fastjet_banner(fastjet)
    counts = [len(c) for c in constituents]
    flat = np.concatenate(constituents)
    p4 = ak.zip({name: ak.unflatten(flat[:, k], counts) for k, name in enumerate(("px", "py", "pz", "E"))})
    sequence = fastjet.ClusterSequence(p4, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=radius)
    taus = sequence.njettiness(
        measure_definition="NormalizedMeasure",
        axes_definition="KT_Axes",
        njets=[1, 2, 3, 4],
        beta=1.0,
        R0=radius,
    )
    taus = np.asarray(ak.to_numpy(taus), dtype=np.float64).reshape(n_jets, 4)
    out = {"jet_sdmass": np.asarray(ak.to_numpy(groomed.msoftdrop), dtype=np.float32).reshape(n_jets)}
    for n in range(4):
        out[f"jet_tau{n + 1}"] = taus[:, n].astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Several classes, several processes


@dataclass
class GeneratedJets:
    """Generated jets as JetClass branches (`arrays`, in `BRANCHES` order) and per-class counters."""

    arrays: dict[str, Any]
    stats: dict[str, ClassStats]
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.arrays["jet_pt"])


def plan_blocks(
    specs: Sequence[ProcessSpec], jets_per_class: int, seed: int, window: JetWindow, block_size: int
) -> list[BlockTask]:
    tasks = []
    for spec in specs:
        for index, start in enumerate(range(0, jets_per_class, block_size)):
            n = min(block_size, jets_per_class - start)
            tasks.append(BlockTask(spec.name, index, n, block_seed(seed, spec.name, index), window))
    return tasks


def _check_counts(jets_per_class: int, seed: int, workers: int | None, block_size: int) -> None:
    if (
        isinstance(jets_per_class, bool)
        or not isinstance(jets_per_class, int | np.integer)
        or jets_per_class < 1
    ):
        raise ConfigError(f"jets per class must be a positive integer, not {jets_per_class!r}.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}.")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}.")
    if block_size < 1:
        raise ConfigError(f"block_size must be at least 1, not {block_size}.")


def generate_jets(
    classes: Sequence[str] | str = ("Tbqq", "QCD"),
    jets_per_class: int = 1000,
    seed: int = 1,
    workers: int | None = None,
    pt_min: float = 550.0,
    pt_max: float = 650.0,
    eta_max: float = 2.0,
    progress: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> GeneratedJets:
    """Generate `jets_per_class` jets of each class, interleaved in a shuffled order fixed by `seed`.

    The result depends only on (classes, jets_per_class, seed, window, block_size), not on
    `workers` (default: the number of CPUs). `progress` shows a tqdm bar of jets done.
    """
    specs = resolve_classes(classes)
    window = JetWindow(float(pt_min), float(pt_max), float(eta_max))
    window.check()
    _check_counts(jets_per_class, seed, workers, block_size)
    check_generators()
    tasks = plan_blocks(specs, int(jets_per_class), int(seed), window, int(block_size))
    workers = min(workers or os.cpu_count() or 1, len(tasks))

    from tqdm.auto import tqdm

    start = time.perf_counter()
    results: list[BlockResult | None] = [None] * len(tasks)
    with tqdm(total=sum(t.n_jets for t in tasks), unit="jet", desc="generating", disable=not progress) as bar:
        if workers == 1:
            for i, task in enumerate(tasks):
                results[i] = run_block(task)
                bar.update(task.n_jets)
        else:
            # spawn: a fork of a parent holding threads (tqdm, torch) can deadlock
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(run_block, task): i for i, task in enumerate(tasks)}
                try:
                    from concurrent.futures import as_completed

                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update(future.result().task.n_jets)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    seconds = time.perf_counter() - start

    stats = {spec.name: ClassStats() for spec in specs}
    for result in results:
        stats[result.task.process].add(result.stats)
    arrays = {
        name: ak.concatenate([r.arrays[name] for r in results])
        if name.startswith(("part_", "aux_"))
        else np.concatenate([r.arrays[name] for r in results])
        for name in BRANCHES
    }
    order = shuffle_order(len(arrays["jet_pt"]), seed)
    arrays = {
        name: (ak.to_packed(a[order]) if isinstance(a, ak.Array) else a[order]) for name, a in arrays.items()
    }
    return GeneratedJets(arrays, stats, seconds)


def shuffle_order(n: int, seed: int) -> np.ndarray:
    """The order in which jets of all classes are written: a permutation fixed by `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"shuffle")])).permutation(n)


# --------------------------------------------------------------------------------------------
# Writing


def check_output_path(path: str | os.PathLike) -> str:
    """Fail early, with one sentence, when `path` cannot be written."""
    path = os.path.expanduser(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"the output '{path}' is a directory; give a file name, e.g. '{path}/jets.root'.")
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot write '{path}': the directory '{directory}' does not exist; create it first."
        )
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write '{path}': permission denied; choose another output path.")
    return path


def _compression(name: str, level: int | None):
    import uproot

    name = name.lower()
    if name not in COMPRESSIONS:
        raise ConfigError(f"unknown compression '{name}'; choose from {', '.join(COMPRESSIONS)}.")
    if name == "none":
        return None
    kind, default_level = {"lzma": (uproot.LZMA, 9), "zlib": (uproot.ZLIB, 6), "zstd": (uproot.ZSTD, 5),
                           "lz4": (uproot.LZ4, 4)}[name]  # fmt: skip
    return kind(default_level if level is None else level)


# Continuous particle branches that `mantissa_bits` rounds (flags, charge and errors are exact already).
ROUNDED_FIELDS = ("px", "py", "pz", "energy", "deta", "dphi", "d0val", "dzval")


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 `values` rounded to `bits` mantissa bits (relative precision 2**-(bits+1)).

    The low mantissa bits of a float are noise for physics and incompressible; zeroing them is
    what ROOT's Float16_t / Double32_t do, and lets the compressor shrink the file ~35%.
    """
    if not 1 <= bits <= 22:
        raise ConfigError(f"mantissa_bits must lie in 1..22 (float32 has 23), not {bits}.")
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    drop = np.uint32(23 - bits)
    half = np.uint32(1 << (23 - bits - 1))
    finite = np.isfinite(values)
    rounded = ((raw + half) >> drop) << drop  # round half up in magnitude; carries into the exponent
    return np.where(finite, rounded, raw).view(np.float32)


def write_jetclass_root(
    path: str | os.PathLike,
    arrays: Mapping[str, Any] | GeneratedJets,
    compression: str = "lzma",
    level: int | None = None,
    basket_jets: int = 10_000,
    treename: str = "tree",
    mantissa_bits: int | None = None,
    aux: bool = True,
) -> int:
    """Write JetClass branches to a ROOT tree (one entry per jet); returns the file size in bytes.

    Particle branches share one counter branch (`npart`), the aux_genpart_* ones another
    (`naux_genpart`). Jets go in baskets of `basket_jets` entries. `mantissa_bits` rounds the
    continuous particle branches (see `round_mantissa`); `aux=False` leaves out the generator truth.
    """
    import uproot

    if isinstance(arrays, GeneratedJets):
        arrays = arrays.arrays
    missing = [b for b in BRANCHES if b not in arrays and (aux or not b.startswith("aux_"))]
    if missing:
        raise ConfigError(f"cannot write a JetClass file without the branches {', '.join(missing)}.")
    path = check_output_path(path)
    codec = _compression(compression, level)
    n_jets = len(arrays["jet_pt"])
    if mantissa_bits is not None:
        arrays = dict(arrays)
        for name in ROUNDED_FIELDS:
            column = arrays[f"part_{name}"]
            flat = round_mantissa(ak.to_numpy(ak.flatten(column)), mantissa_bits)
            arrays[f"part_{name}"] = ak.unflatten(flat, ak.num(column))
    groups = (("part", PARTICLE_FIELDS), ("aux_genpart", AUX_FIELDS)) if aux else (("part", PARTICLE_FIELDS),)

    def chunk(start: int, stop: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for group, names in groups:
            data[group] = ak.zip({name: arrays[f"{group}_{name}"][start:stop] for name in names})
        for name in JET_BRANCHES + LABEL_BRANCHES:
            data[name] = np.asarray(arrays[name][start:stop])
        return data

    try:
        with uproot.recreate(path, compression=codec) as file:
            # mktree names the fields of the jagged records part_px, ... (JetClass), with counters npart, ...
            tree = file.mktree(treename, chunk(0, min(basket_jets, n_jets)))
            for start in range(basket_jets, n_jets, basket_jets):
                tree.extend(chunk(start, min(start + basket_jets, n_jets)))
    except OSError as err:
        raise ConfigError(
            f"cannot write '{path}' ({err.strerror or err}); choose another output path."
        ) from None
    return os.path.getsize(path)
