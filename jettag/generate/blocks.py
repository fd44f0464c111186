"""One block of jets of one class: a Pythia instance seeded for the block, anti-kT jets from each
event's visible final state clustered with FastJet (the fjcore inside Pythia), the pT / |eta| window, the truth matching, and
the block's JetClass arrays (`branches`); with the counters of what was generated and dropped."""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from jettag.errors import ConfigError
from jettag.features.kinematics import jet_axis_from_particles
from jettag.generate.backends import import_pythia
from jettag.generate.branches import AUX_FIELDS, PX, PY, PZ, E, jet_arrays, substructure
from jettag.generate.processes import JET_RADIUS, PROCESSES, SQRT_S, ProcessSpec
from jettag.generate.truth import match_decay


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

    def contains_roughly(self, pt: float, eta: float, slack: float = 1e-3) -> bool:
        """`contains` widened by a relative `slack`: a cheap first look at a jet whose pt and eta
        may differ in the last digits from the ones `contains` then decides on."""
        return self.pt_min * (1 - slack) < pt < self.pt_max * (1 + slack) and abs(eta) < self.eta_max * (
            1 + slack
        )


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


def _make_pythia(spec: ProcessSpec, task: BlockTask):
    """An initialised Pythia for one block, and its user hook (None, or the decay filter: keep it alive)."""
    pythia8mc = import_pythia()
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


VISIBLE_FINAL = 2  # SlowJet's selection of inputs: final-state particles that are visible (no neutrinos)
KEEP_MASSES = 2  # SlowJet's massSet: cluster the four-momenta as they are (E-scheme, like FastJet's default)


def make_jet_finder(radius: float):
    """Anti-kT with radius R over an event's visible final state, run in C++ from Pythia's own event
    record: Pythia's SlowJet in its FastJet mode (the bundled fjcore, FastJet's own clustering), so
    that no particle of the event has to cross into Python. Same jets as `fastjet.ClusterSequence`
    over the visible final-state four-momenta with `antikt_algorithm` (tests/generate compare them)."""
    pythia8mc = import_pythia()
    return pythia8mc.SlowJet(-1, radius, 0.0, 1e6, VISIBLE_FINAL, KEEP_MASSES, None, True, True)


def particle_rows(event, indices) -> np.ndarray:
    """(n, 9) table of the event's particles `indices`: px py pz E id charge x y z (GeV, mm)."""
    rows = []
    for i in indices:
        p = event[i]
        rows.append((p.px(), p.py(), p.pz(), p.e(), p.id(), p.charge(), p.xProd(), p.yProd(), p.zProd()))
    return np.array(rows, dtype=np.float64).reshape(-1, 9)


def leading_jets(jet_finder, event, n_jets: int = 2) -> list[tuple[float, float, list[int]]]:
    """(pt, eta, sorted event indices of the constituents) of the `n_jets` highest-pT jets; pt and
    eta are Pythia's, good for a first look at the window only (the kept jets are recomputed)."""
    jet_finder.analyze(event)
    jets = []
    for j in range(min(n_jets, jet_finder.sizeJet())):
        p = jet_finder.p(j)
        jets.append((p.pT(), p.eta(), sorted(jet_finder.constituents(j))))
    return jets


def _jet_axis(jet_particles: np.ndarray) -> tuple[float, float, float]:
    """pt, eta, phi of one jet: the sum of its particles' four-momenta, as the loader computes it."""
    columns = (jet_particles[:, k] for k in (PX, PY, PZ, E))
    axis = jet_axis_from_particles(*columns, np.array([len(jet_particles)]))
    return float(axis["jet_pt"][0]), float(axis["jet_eta"][0]), float(axis["jet_phi"][0])


def run_block(task: BlockTask) -> BlockResult:
    """Generate events until `task.n_jets` jets pass the window (and the truth matching)."""
    start = time.perf_counter()
    spec = PROCESSES[task.process]
    pythia, _hook = _make_pythia(spec, task)  # the hook (if any) must outlive the events
    jet_finder = make_jet_finder(task.window.radius)
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
        decays = None  # found only for events with a jet in the window
        for rough_pt, rough_eta, indices in leading_jets(jet_finder, pythia.event):
            if not task.window.contains_roughly(rough_pt, rough_eta):
                stats.outside_window += 1
                continue
            jet_particles = particle_rows(pythia.event, indices)
            pt, eta, phi = _jet_axis(jet_particles)
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
