"""From a chunk of jets read from a file to model inputs: `JetBuilder` plans which branches of a file to
read (`ReadPlan`) and turns each chunk into `JetArrays`: standardized features, four-vectors, labels,
observers and entry numbers, jet by jet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from jettag.data.arrays import JetArrays, zero_row_buffer
from jettag.data.expressions import Expression
from jettag.data.labels import LabelSpec
from jettag.data.reader import Chunk, JetFile
from jettag.errors import ConfigError, DataError
from jettag.features.kinematics import FOUR_MOMENTUM, JET_AXIS
from jettag.features.sets import FeatureSet
from jettag.features.variables import VariableComputer, required_branches

DERIVED_OBSERVERS = frozenset({*JET_AXIS, "jet_mass", "jet_nparticles"})


@dataclass
class ReadPlan:
    """Which branches of one file to read, under their names in the file."""

    particle: list[str]
    jet: list[str]
    observers: list[str]
    labels: list[str]
    computed: list[str] = field(default_factory=list)  # new variables: computed, not read
    inputs: list[str] = field(default_factory=list)  # branches the selection and new variables read

    def all_branches(self, rename: Mapping[str, str]) -> list[str]:
        names = {*self.particle, *self.jet, *self.observers, *self.labels, *self.inputs} - set(self.computed)
        return sorted(rename.get(n, n) for n in names)


class JetBuilder:
    """Turns chunks of jets (awkward arrays) into `JetArrays` for one feature set.

    Jets without particles are skipped and counted when `skip_empty` (the default), otherwise
    they are an error; jets with a NaN or infinite input are an error unless `drop_nonfinite`,
    in which case they too are skipped and counted. Jets with a physically impossible particle
    (`unphysical_particle`) are an error unless `drop_unphysical`, likewise. `new_variables` (name -> expression) are
    computed first and can be used as inputs, observers or in the `selection`; jets failing the
    selection are counted as `failed_selection`. Chunks of a per-class group (`Chunk.label`) take
    their class from the group instead of label branches.
    """

    def __init__(
        self,
        features: FeatureSet,
        labels: LabelSpec | None,
        observers: Sequence[str] = (),
        branches: Mapping[str, str] | None = None,
        skip_empty: bool = True,
        drop_nonfinite: bool = False,
        selection: Expression | None = None,
        new_variables: Mapping[str, Expression] | None = None,
        drop_unphysical: bool = False,
    ):
        self.features = features
        self.labels = labels
        self.observers = list(observers)
        self.rename = dict(branches or {})  # canonical name -> name in the file
        self.skip_empty = skip_empty
        self.drop_nonfinite = drop_nonfinite
        self.drop_unphysical = drop_unphysical
        self.selection = selection
        self.new_variables = dict(new_variables or {})

    def plan(self, jet_file: JetFile) -> ReadPlan:
        inverse = {v: k for k, v in self.rename.items()}
        in_file = {inverse.get(b, b) for b in jet_file.branches}
        computed = [n for n in self.new_variables if n not in in_file]
        available = in_file | set(computed)
        inputs: set[str] = set()
        for expression in [*self.new_variables.values(), *([self.selection] if self.selection else [])]:
            unknown = sorted(expression.names - available)
            if unknown:
                raise DataError(
                    f"{expression.key}: '{jet_file.path}' has no branch {', '.join(unknown)} used by "
                    f"'{expression.text}'; check the name (or define it earlier in data.new_variables)."
                )
            inputs |= expression.names - set(computed)
        read, missing = required_branches(self.features.names, available)
        if missing:
            raise jet_file.lacks_inputs([self.rename.get(n, n) for n in sorted(missing)], self.features.name)
        self._check(jet_file, read, f"the four-momenta and feature set '{self.features.name}'")
        label_branches = list(self.labels.branches) if self.labels and jet_file.label is None else []
        self._check(jet_file, label_branches, "data.labels", computed)
        read_observers = [o for o in self.observers if o in available or o not in DERIVED_OBSERVERS]
        self._check(jet_file, read_observers, "data.observers", computed)
        jet_read = [n for n in read if n in JET_AXIS]
        particle_read = [n for n in read if n not in JET_AXIS]
        return ReadPlan(particle_read, jet_read, read_observers, label_branches, computed, sorted(inputs))

    def _check(self, jet_file: JetFile, names, purpose: str, computed=()) -> None:
        jet_file.check_branches([self.rename.get(n, n) for n in names if n not in computed], purpose)

    def _expressions(self, arrays: ak.Array, where: str) -> tuple[dict[str, ak.Array], np.ndarray | None]:
        """The new variables of a chunk, and the selection's pass flag per jet (None: no selection)."""
        computed: dict[str, ak.Array] = {}

        class Names(Mapping):
            def __getitem__(inner, name):
                return computed[name] if name in computed else arrays[self.rename.get(name, name)]

            def __iter__(inner):
                return iter(())

            def __len__(inner):
                return 0

        names = Names()
        for name, expression in self.new_variables.items():
            value = expression(names)
            if not isinstance(value, ak.Array):
                value = ak.Array(np.broadcast_to(np.asarray(value, dtype=np.float64), (len(arrays),)))
            computed[name] = value
        if self.selection is None:
            return computed, None
        passed = self.selection(names)
        if isinstance(passed, ak.Array) and passed.ndim != 1:
            raise ConfigError(
                f"{self.selection.key}: '{self.selection.text}' gives one value per particle in {where}; "
                "a selection needs one per jet (wrap particle terms in any(...) or all(...))."
            )
        passed = np.broadcast_to(
            np.asarray(ak.to_numpy(passed) if isinstance(passed, ak.Array) else passed), (len(arrays),)
        )
        return computed, passed.astype(bool)

    def build(self, chunk: Chunk, plan: ReadPlan) -> tuple[JetArrays, Counter]:
        """The jets of one chunk (those kept) and the jets skipped, by reason."""
        skipped: Counter = Counter()
        arrays, where = chunk.arrays, chunk.where
        computed, passed = (
            self._expressions(arrays, where) if self.new_variables or self.selection else ({}, None)
        )

        def column(name: str) -> ak.Array:
            return computed[name] if name in computed else arrays[self.rename.get(name, name)]

        particles, counts = self._particles(plan, column, where)
        jets = {
            name: self._per_jet(column(name), name, where).astype(np.float32, copy=False) for name in plan.jet
        }
        file_observers = {
            name: self._per_jet(column(name), name, where)
            for name in self.observers
            if name in plan.observers or name in computed
        }
        # observers are checked too: a NaN jet_mass would vanish from the report's mass-binned rejections
        drop = self._dropped(particles, {**file_observers, **jets}, counts, passed, chunk, skipped)
        labels, truth = self._labels(chunk, len(counts))
        entries = np.arange(len(counts), dtype=np.int64) + chunk.start + chunk.offset
        if drop.any():
            keep = ~drop
            keep_particle = np.repeat(keep, counts)
            particles = {k: v[keep_particle] for k, v in particles.items()}
            jets = {k: v[keep] for k, v in jets.items()}
            counts, labels, entries = counts[keep], labels[keep], entries[keep]
            truth = {k: v[keep] for k, v in truth.items()}
            file_observers = {k: v[keep] for k, v in file_observers.items()}

        # Jet-level variables the file lacks (the jet axis, its mass) come from the sum of all of a jet's
        # particles, before truncation: `whole` computes them once, when first asked for.
        whole = VariableComputer(particles, jets, counts)
        observers = {}
        for name in self.observers:
            if name in file_observers:
                observers[name] = file_observers[name]
            elif name == "jet_nparticles":
                observers[name] = counts.astype(np.float32)
            else:
                observers[name] = np.asarray(whole.jet(name)).astype(np.float32)

        particles, counts = _sort_and_truncate(particles, counts, self.features.max_particles)
        features = self._features(whole.truncated(particles, counts), len(particles["part_px"]))
        self._check_finite(features, entries - chunk.offset, counts, where)
        vectors = _columns(len(particles["part_px"]), (particles[n] for n in FOUR_MOMENTUM))
        jets_out = JetArrays(features, vectors, counts.astype(np.int64), labels, truth, observers, entries)
        return jets_out, skipped

    @staticmethod
    def _per_jet(values: ak.Array, name: str, where: str) -> np.ndarray:
        if values.ndim != 1:
            raise DataError(f"{where}: branch '{name}' must hold one value per jet (it has several).")
        return ak.to_numpy(values)

    @staticmethod
    def _particles(plan: ReadPlan, column, where: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The particle branches, flat, and the particles per jet (the same for every branch)."""
        particles, counts = {}, None
        for name in plan.particle:
            values = column(name)
            if values.ndim != 2:
                raise DataError(
                    f"{where}: branch '{name}' has one value per jet; a particle feature needs one per particle."
                )
            n, flat = _jagged(values)
            if counts is None:
                counts = n
            elif not np.array_equal(n, counts):
                raise DataError(
                    f"{where}: branches '{plan.particle[0]}' and '{name}' have different particle counts."
                )
            # flags stay boolean (1 byte, always finite, cast once when the features are written)
            particles[name] = flat if flat.dtype == np.bool_ else flat.astype(np.float32, copy=False)
        return particles, counts

    def _dropped(self, particles, jets, counts, passed, chunk: Chunk, skipped: Counter) -> np.ndarray:
        """Jets to drop (counted in `skipped`): failing the selection, no particles, or (when allowed)
        non-finite inputs; a non-finite input or an empty jet that may not be dropped is an error."""
        where, first = chunk.where, chunk.start
        drop = np.zeros(len(counts), dtype=bool) if passed is None else ~passed
        skipped["failed_selection"] += int(drop.sum())
        selected = ~drop
        jet_of_particle = np.repeat(np.arange(len(counts)), counts)
        for name, values in {**particles, **jets}.items():
            if values.dtype.kind not in "fc":
                continue  # booleans and integers are always finite
            bad = ~np.isfinite(values)
            if bad.any():
                bad_jets = jet_of_particle[bad] if name in particles else np.flatnonzero(bad)
                bad_jets = bad_jets[selected[bad_jets]]
                if not len(bad_jets):
                    continue
                if not self.drop_nonfinite:
                    raise DataError(
                        f"{where}: branch '{name}' has a NaN or infinite value at entry {first + bad_jets[0]}; "
                        "fix the file, or set data.drop_nonfinite_jets=true to skip such jets (they are counted)."
                    )
                drop[bad_jets] = True
        skipped["nonfinite_inputs"] += int((drop & selected).sum())
        if all(name in particles for name in FOUR_MOMENTUM):
            unphysical = unphysical_jets(particles, jet_of_particle, len(counts)) & ~drop
            if unphysical.any():
                if not self.drop_unphysical:
                    jet = int(np.argmax(unphysical))
                    raise DataError(f"{where}: {describe_unphysical(particles, counts, jet, first + jet)}")
                skipped["unphysical_particle"] += int(unphysical.sum())
                drop |= unphysical
        empty = (counts == 0) & ~drop
        if empty.any():
            if not self.skip_empty:
                raise DataError(
                    f"{where}: the jet at entry {first + int(np.argmax(empty))} has no particles; remove such jets "
                    "or set data.skip_empty_jets=true to skip them (they are counted)."
                )
            skipped["no_particles"] += int(empty.sum())
            drop |= empty
        return drop

    def _labels(self, chunk: Chunk, num_jets: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Class index per jet, and the label branches as read (truth): from the file, the file's group,
        or none (unlabelled)."""
        if self.labels is None:
            return np.zeros(num_jets, np.int64), {}
        if chunk.label is not None:
            labels = np.full(num_jets, chunk.label, dtype=np.int64)
            return labels, self.labels.truth_of(labels)
        return self.labels.decode(chunk.arrays, chunk.where, chunk.start)

    def _features(self, variables: VariableComputer, rows: int) -> np.ndarray:
        return _columns(rows, (variables(f.name) for f in self.features.features), self.features.features)

    def _check_finite(
        self, features: np.ndarray, entries: np.ndarray, counts: np.ndarray, where: str
    ) -> None:
        bad = ~np.isfinite(features)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            entry = int(np.repeat(entries, counts)[row])
            raise DataError(
                f"{where}: feature '{self.features.features[col].name}' is not finite for a particle of the jet "
                f"at entry {entry} (from an input such as a zero or negative energy); check that jet's values."
            )


# E below |p| by at most this fraction of |p| is rounding (massless particles stored in float32)
MASS_ROUNDING = 1e-3


def unphysical_particles(particles: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks of the particles whose four-momentum is impossible, by reason.

    - `negative energy`: E < 0;
    - `zero pT`: px = py = 0 (no direction in eta and phi: the features need log pT, eta, phi);
    - `energy below |p|`: E < |p| (1 - MASS_ROUNDING), an imaginary mass; E below |p| by less is the
      rounding of massless particles written in float32, and such particles are used as stored.
    """
    px, py, pz, energy = (particles[name].astype(np.float64) for name in FOUR_MOMENTUM)
    p = np.sqrt(px * px + py * py + pz * pz)
    with np.errstate(invalid="ignore"):
        return {
            "negative energy": energy < 0,
            "zero pT": (px == 0) & (py == 0),
            "energy below |p|": (energy >= 0) & (energy < p * (1 - MASS_ROUNDING)),
        }


def unphysical_jets(
    particles: Mapping[str, np.ndarray], jet_of_particle: np.ndarray, num_jets: int
) -> np.ndarray:
    bad = np.zeros(len(jet_of_particle), dtype=bool)
    for mask in unphysical_particles(particles).values():
        bad |= mask
    out = np.zeros(num_jets, dtype=bool)
    out[jet_of_particle[bad]] = True
    return out


def describe_unphysical(particles: Mapping[str, np.ndarray], counts: np.ndarray, jet: int, entry: int) -> str:
    """One sentence on the first impossible particle of jet `jet` (at `entry` of the file)."""
    start = int(np.sum(counts[:jet]))
    rows = slice(start, start + int(counts[jet]))
    for reason, mask in unphysical_particles({k: particles[k][rows] for k in FOUR_MOMENTUM}).items():
        if mask.any():
            i = int(np.argmax(mask))
            px, py, pz, e = (float(particles[k][rows][i]) for k in FOUR_MOMENTUM)
            return (
                f"particle {i} of the jet at entry {entry} has {reason} (part_px={px:.6g}, part_py={py:.6g}, "
                f"part_pz={pz:.6g}, part_energy={e:.6g} GeV); fix the file, or set data.drop_unphysical_jets=true "
                "to skip such jets (they are counted)."
            )
    raise AssertionError("no unphysical particle in this jet")


def _jagged(values: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values per jet, flat values) of a jagged array; straight from the buffers as uproot reads
    them (list offsets over a flat numeric array), through awkward otherwise."""
    layout = values.layout
    if (
        isinstance(layout, ak.contents.ListOffsetArray)
        and isinstance(layout.content, ak.contents.NumpyArray)
        and isinstance(layout.content.data, np.ndarray)
        and layout.content.data.ndim == 1
        and isinstance(layout.offsets.data, np.ndarray)
    ):
        offsets = layout.offsets.data.astype(np.int64, copy=False)
        return np.diff(offsets), layout.content.data[offsets[0] : offsets[-1]]
    return ak.to_numpy(ak.num(values, axis=1)).astype(np.int64, copy=False), ak.to_numpy(ak.flatten(values))


def _columns(rows: int, values, features=None) -> np.ndarray:
    """The (rows, C) float32 array of the columns `values` (transformed by `features` when given).

    Written column by column into one preallocated array, with no float64 intermediate: the same
    values as stacking them and converting to float32 (integers go through float64 as there).
    """
    values = list(values)
    # One more row, of zeros, after the last: `rows_with_zero` finds it, so that a batch can be padded
    # by gathering (every padding slot takes the zero row) instead of zero-filling and scattering.
    out = zero_row_buffer(rows, len(values))
    with np.errstate(invalid="ignore"):
        for j, value in enumerate(values):
            value = np.asarray(value)
            if value.dtype == np.bool_:
                value = value.view(np.uint8)  # the same 0/1, cast to float32 about 6x faster than bool
            elif value.dtype.kind in "iu":
                value = value.astype(np.float64)
            out[:rows, j] = value if features is None else features[j].transform(value)
    return out[:rows]


def _sort_and_truncate(
    particles: dict[str, np.ndarray], counts: np.ndarray, max_particles: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Order each jet's particles by decreasing pT and keep at most `max_particles` of them."""
    starts = np.cumsum(counts) - counts
    jet_of_particle = np.repeat(np.arange(len(counts)), counts)
    pt = np.hypot(particles["part_px"], particles["part_py"])
    # Files are usually pT-ordered already; only sort when they are not.
    descending = np.diff(pt) <= 0
    same_jet = jet_of_particle[1:] == jet_of_particle[:-1]
    if not np.all(descending | ~same_jet):
        order = np.lexsort((-pt, jet_of_particle))
        particles = {k: v[order] for k, v in particles.items()}
    if counts.size and counts.max() > max_particles:
        rank = np.arange(len(jet_of_particle)) - np.repeat(starts, counts)
        keep = rank < max_particles
        particles = {k: v[keep] for k, v in particles.items()}
        counts = np.minimum(counts, max_particles)
    return particles, counts
