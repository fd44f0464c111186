"""Named per-particle variables: which branches each needs, and how each is computed.

A feature set names variables (`part_pt_log`, `part_deltaR`, `part_charge`, ...). Some are read
from the file as they are, some are derived from the four-momenta and the jet axis with
`vector`. `part_deta`, `part_dphi` and the jet axis (`jet_pt jet_eta jet_phi jet_energy`) are read
when the file carries them and derived otherwise; any other name that is not derived here is
read from the file as a particle branch, so users can add their own per-particle inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from jettag.features.kinematics import (
    FOUR_MOMENTUM,
    JET_AXIS,
    jet_axis_from_particles,
    particle_vectors,
    relative_coordinates,
)

# Derived variables and the variables they are computed from (besides the four-momentum).
DERIVED: dict[str, tuple[str, ...]] = {
    "part_pt": (),
    "part_eta": (),
    "part_phi": (),
    "part_pt_log": (),
    "part_e_log": (),
    "part_logptrel": ("jet_pt",),
    "part_logerel": ("jet_energy",),
    "part_deta": ("jet_eta",),
    "part_dphi": ("jet_phi",),
    "part_deltaR": ("part_deta", "part_dphi"),
    "part_d0": ("part_d0val",),
    "part_dz": ("part_dzval",),
}
# Derived variables that are nevertheless read when the file carries them.
READ_IF_PRESENT = frozenset({"part_deta", "part_dphi", *JET_AXIS})


def required_branches(names: Iterable[str], available: Iterable[str]) -> tuple[set[str], set[str]]:
    """Branches to read for `names`, and the names that can be neither read nor derived."""
    available = set(available)
    read: set[str] = set(FOUR_MOMENTUM)
    missing: set[str] = set()

    def need(name: str) -> None:
        if name in READ_IF_PRESENT and name in available:
            read.add(name)
        elif name in JET_AXIS:
            pass  # summed from the particles
        elif name in DERIVED:
            for dep in DERIVED[name]:
                need(dep)
        elif name in available:
            read.add(name)
        else:
            missing.add(name)

    for name in names:
        need(name)
    return read, missing


class VariableComputer:
    """Computes named variables for one chunk of jets, each at most once.

    `particles` maps branch names to flat per-particle arrays, `jets` maps branch names to
    per-jet arrays, `counts` is the number of particles of each jet. A jet-level variable the
    file lacks (the jet axis `jet_pt jet_eta jet_phi jet_energy`, and `jet_mass`) is the
    four-vector sum of all of the jet's particles: computed once, here, and shared with the
    computer of the same jets truncated to their leading particles (`truncated`).
    """

    def __init__(
        self,
        particles: dict[str, np.ndarray],
        jets: dict[str, np.ndarray],
        counts: np.ndarray,
        whole: VariableComputer | None = None,
    ):
        self.particles = particles
        self.jets = jets
        self.counts = counts
        self._whole = whole  # the same jets with all their particles, for the jet-level sums
        self._cache: dict[str, np.ndarray] = {}
        self._jet_cache: dict[str, np.ndarray] = {}
        self._p4 = particle_vectors(*(particles[name] for name in FOUR_MOMENTUM))

    def truncated(self, particles: dict[str, np.ndarray], counts: np.ndarray) -> VariableComputer:
        """The computer of the same jets with fewer particles each (the leading ones): per-particle
        variables from those, jet-level ones from all particles."""
        return VariableComputer(particles, self.jets, counts, whole=self)

    def jet(self, name: str) -> np.ndarray:
        """A jet-level variable (one value per jet), read or summed from all the jet's particles."""
        if name in self.jets:
            return self.jets[name]
        if self._whole is not None:
            return self._whole.jet(name)
        if name not in self._jet_cache:
            if name not in JET_AXIS and name != "jet_mass":
                raise KeyError(name)
            self._jet_cache.update(
                jet_axis_from_particles(*(self.particles[n] for n in FOUR_MOMENTUM), self.counts)
            )
        return self._jet_cache[name]

    def per_particle(self, jet_values: np.ndarray) -> np.ndarray:
        return np.repeat(jet_values, self.counts)

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    def _compute(self, name: str) -> np.ndarray:
        if name in self.particles and (name not in DERIVED or name in READ_IF_PRESENT):
            return self.particles[name]
        p4 = self._p4
        with np.errstate(divide="ignore", invalid="ignore"):
            match name:
                case "part_pt":
                    return p4.pt
                case "part_eta":
                    return p4.eta
                case "part_phi":
                    return p4.phi
                case "part_pt_log":
                    return np.log(self("part_pt"))
                case "part_e_log":
                    return np.log(p4.E)
                case "part_logptrel":
                    return np.log(self("part_pt") / self.per_particle(self.jet("jet_pt")))
                case "part_logerel":
                    return np.log(p4.E / self.per_particle(self.jet("jet_energy")))
                case "part_deta" | "part_dphi":
                    deta, dphi = relative_coordinates(
                        p4, self.per_particle(self.jet("jet_eta")), self.per_particle(self.jet("jet_phi"))
                    )
                    self._cache["part_deta"], self._cache["part_dphi"] = deta, dphi
                    return deta if name == "part_deta" else dphi
                case "part_deltaR":
                    return np.hypot(self("part_deta"), self("part_dphi"))
                case "part_d0":
                    return np.tanh(self.particles["part_d0val"])
                case "part_dz":
                    return np.tanh(self.particles["part_dzval"])
        raise KeyError(name)
