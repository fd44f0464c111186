"""Padding batch by batch, and the batch sampler."""

import numpy as np
import torch

from jettag.data import JetArrays, JetBatchSampler, JetDataset


def arrays(counts, features=3, seed=0):
    rng = np.random.default_rng(seed)
    total = int(np.sum(counts))
    return JetArrays(
        features=rng.normal(size=(total, features)).astype(np.float32),
        vectors=rng.normal(size=(total, 4)).astype(np.float32),
        counts=np.asarray(counts),
        labels=np.arange(len(counts)) % 2,
    )


def test_padding_places_every_particle():
    jets = arrays([3, 1, 5, 2])
    ds = JetDataset(jets)
    batch = ds[[2, 0, 3]]
    assert batch.x.shape == (3, 5, 3)  # padded to the longest jet of the batch only
    offsets = np.cumsum(jets.counts) - jets.counts
    for row, j in enumerate([2, 0, 3]):
        n = jets.counts[j]
        expected = torch.from_numpy(jets.features[offsets[j] : offsets[j] + n])
        torch.testing.assert_close(batch.x[row, :n], expected)
        torch.testing.assert_close(
            batch.v[row, :n], torch.from_numpy(jets.vectors[offsets[j] : offsets[j] + n])
        )
        assert batch.mask[row].tolist() == [True] * n + [False] * (5 - n)
        assert (batch.x[row, n:] == 0).all()
    assert batch.y.tolist() == [0, 0, 1] and batch.entry.tolist() == [2, 0, 3]


def test_sampler_covers_each_jet_once_and_is_reproducible():
    counts = np.random.default_rng(1).integers(1, 100, 1000)
    for group in (False, True):
        sampler = JetBatchSampler(counts, 64, shuffle=True, group_by_length=group, seed=3)
        sampler.set_epoch(0)
        first = [i for b in sampler for i in b]
        assert sorted(first) == list(range(1000))
        sampler.set_epoch(0)
        assert [i for b in sampler for i in b] == first
        sampler.set_epoch(1)
        assert [i for b in sampler for i in b] != first


def test_grouping_by_length_reduces_padding():
    counts = np.random.default_rng(2).integers(1, 128, 5000)

    def padded(sampler):
        return sum(len(b) * counts[b].max() for b in map(np.array, sampler))

    plain = padded(JetBatchSampler(counts, 128, shuffle=True, seed=0))
    grouped = padded(JetBatchSampler(counts, 128, shuffle=True, group_by_length=True, seed=0))
    assert grouped < 0.7 * plain


def test_grouping_with_labels_keeps_the_class_mix():
    # multiplicity separates the classes: plain grouping gives single-class batches
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 6000)
    counts = np.where(labels == 1, rng.integers(60, 128, 6000), rng.integers(10, 70, 6000))

    def fractions(sampler):
        return np.array([labels[b].mean() for b in map(np.array, sampler)])

    plain = fractions(JetBatchSampler(counts, 128, shuffle=True, group_by_length=True, seed=0))
    assert np.mean((plain < 0.1) | (plain > 0.9)) > 0.5
    sampler = JetBatchSampler(counts, 128, shuffle=True, group_by_length=True, seed=0, labels=labels)
    stratified = fractions(sampler)
    assert np.all(np.abs(stratified - labels.mean()) < 0.2)
    assert sorted(i for b in sampler for i in b) == list(range(6000))

    def padded(sampler):
        return sum(len(b) * counts[b].max() for b in map(np.array, sampler))

    assert padded(sampler) < 0.85 * padded(JetBatchSampler(counts, 128, shuffle=True, seed=0))


def test_gather_takes_whole_jets_from_several_arrays_with_a_zero_row():
    from jettag.data.arrays import rows_with_zero

    rng = np.random.default_rng(4)

    def jets(n):
        counts = rng.integers(1, 6, n)
        total = int(counts.sum())
        return JetArrays(
            rng.normal(size=(total, 3)).astype(np.float32), rng.normal(size=(total, 4)).astype(np.float32),
            counts, rng.integers(0, 2, n), {"label_QCD": rng.integers(0, 2, n)}, {"jet_pt": rng.normal(size=n)},
        )  # fmt: skip

    a, b = jets(7), jets(5)
    picks = [(a, np.array([6, 0, 3])), (b, np.array([2])), (a, np.array([3]))]
    out = JetArrays.gather(picks)
    # worked out jet by jet with plain slices
    expected_features, expected_vectors = [], []
    for arrays, index in picks:
        starts = np.concatenate([[0], np.cumsum(arrays.counts)[:-1]])
        for i in index:
            expected_features.append(arrays.features[starts[i] : starts[i] + arrays.counts[i]])
            expected_vectors.append(arrays.vectors[starts[i] : starts[i] + arrays.counts[i]])
    assert np.array_equal(out.features, np.concatenate(expected_features))
    assert np.array_equal(out.vectors, np.concatenate(expected_vectors))
    assert out.counts.tolist() == [a.counts[6], a.counts[0], a.counts[3], b.counts[2], a.counts[3]]
    assert out.labels.tolist() == [a.labels[6], a.labels[0], a.labels[3], b.labels[2], a.labels[3]]
    assert out.observers["jet_pt"][3] == b.observers["jet_pt"][2]
    assert out.truth["label_QCD"][4] == a.truth["label_QCD"][3]
    # the zero row after the last particle, found without a copy; plain arrays get one appended
    rows = rows_with_zero(out.features)
    assert len(rows) == len(out.features) + 1 and not rows.view(np.float32).reshape(-1, 3)[-1].any()
    assert np.shares_memory(rows, out.features)
    plain = rows_with_zero(np.ones((4, 3), np.float32)).view(np.float32).reshape(-1, 3)
    assert plain.shape == (5, 3) and plain[:4].all() and not plain[4].any()
