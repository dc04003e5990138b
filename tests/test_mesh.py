"""Mesh planning for sweeps: every member count on every device count gets a working mesh."""

import itertools

import pytest

from effnet_jax.parallel.mesh import padded_member_count, plan_population_mesh

MEMBER_COUNTS = range(1, 17)
DEVICE_COUNTS = (1, 2, 4, 8)


@pytest.mark.parametrize("members, devices", list(itertools.product(MEMBER_COUNTS, DEVICE_COUNTS)))
def test_every_member_count_fits_every_device_count(members, devices):
    population, data = plan_population_mesh(members, devices, (128, 1000))
    assert population * data == devices
    assert 128 % data == 0 and 1000 % data == 0
    padded = padded_member_count(members, population)
    assert padded % population == 0 and members <= padded < members + population
    # No other population size wastes fewer member slots (the work per device).
    for other in range(1, devices + 1):
        if devices % other == 0 and 128 % (devices // other) == 0 and 1000 % (devices // other) == 0:
            assert padded_member_count(members, other) >= padded


@pytest.mark.parametrize("members, devices, expected", [
    (2, 8, (2, 4)), (5, 8, (1, 8)), (6, 8, (2, 4)), (7, 8, (1, 8)), (10, 8, (2, 4)), (12, 8, (4, 2)),
    (16, 8, (8, 1)), (5, 2, (1, 2)), (4, 4, (4, 1)), (1, 1, (1, 1)),
])
def test_automatic_mesh_prefers_no_padding_then_the_widest_population_axis(members, devices, expected):
    assert plan_population_mesh(members, devices, (128, 1000)) == expected


def test_batch_sizes_limit_the_data_axis():
    # A batch of 12 cannot be split 8 ways (nor an eval batch of 6 4 ways): the population axis
    # grows and the members are padded to fill it (5 -> 6 on 2 x 4; 5 -> 8 on 8 x 1).
    assert plan_population_mesh(5, 8, (12, 1000)) == (2, 4)
    assert padded_member_count(5, 2) == 6
    assert plan_population_mesh(5, 8, (12, 6)) == (8, 1)


def test_fixed_population_axis_pads_the_members():
    assert plan_population_mesh(5, 8, (128, 1000), shards=8) == (8, 1)
    assert padded_member_count(5, 8) == 8


@pytest.mark.parametrize("shards, batches, message", [
    (3, (128, 1000), r"parallel.population_shards=3 must divide the 8 devices of the sweep; use one of \[1, 2, 4, 8\]"),
    (-1, (128, 1000), "parallel.population_shards=-1 must divide"),
    (1, (12, 1000), r"parallel.population_shards=1 leaves a data axis of 8 devices, which does not divide "
                    r"train.batch_size/eval_batch_size \(12, 1000\)"),
])
def test_impossible_meshes_are_one_clear_message(shards, batches, message):
    with pytest.raises(ValueError, match=message):
        plan_population_mesh(5, 8, batches, shards=shards)


# The meshes the README lists: 8 devices, batch 128, eval batch 1000.
README_MESHES = {1: (1, 8), 2: (2, 4), 3: (1, 8), 4: (4, 2), 5: (1, 8), 6: (2, 4), 7: (1, 8), 8: (8, 1),
                 10: (2, 4), 12: (4, 2), 16: (8, 1)}


@pytest.mark.parametrize("members", sorted(README_MESHES))
def test_the_readme_mesh_table(members):
    assert plan_population_mesh(members, 8, (128, 1000)) == README_MESHES[members]
