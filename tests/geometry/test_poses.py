"""Rotations, quaternions and camera poses (ns_diffusion_methods.geometry.poses): round trips, hand-computed values,
the pose distance, SLERP, stepping toward a target, the nearest pose."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.geometry.poses import (
    nearest_pose_indices,
    pose_distance,
    quaternion_to_rotation,
    rotation_angle,
    rotation_to_quaternion,
    slerp,
    step_pose_toward,
)


def rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose(angle: float, translation) -> torch.Tensor:
    return torch.cat([rot_z(angle), torch.tensor(translation, dtype=torch.float32)[:, None]], dim=1)


def random_rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quaternion_to_rotation(torch.randn(n, 4, generator=g, dtype=torch.float64))


def test_quaternion_round_trip_and_angles():
    rotations = random_rotations(20, 0)
    torch.testing.assert_close(quaternion_to_rotation(rotation_to_quaternion(rotations)), rotations)
    assert float(rotation_angle(rot_z(0.3), rot_z(1.0))) == pytest.approx(0.7, abs=1e-5)
    assert float(rotation_angle(rot_z(0.0), rot_z(0.0))) == 0.0  # no NaN for identical rotations
    assert float(rotation_angle(rot_z(0.0), rot_z(math.pi))) == pytest.approx(math.pi, abs=1e-5)
    d = pose_distance(pose(0.0, [0, 0, 0]), pose(0.5, [3.0, 4.0, 0]))
    assert float(d) == pytest.approx(5.0 + 0.5, abs=1e-5)
    assert float(pose_distance(pose(0.0, [0, 0, 0]), pose(0.5, [3.0, 4.0, 0]), 2.0, 0.0)) == pytest.approx(10.0)


def test_slerp_is_constant_speed_on_the_shortest_arc():
    q0 = rotation_to_quaternion(rot_z(0.2))
    q1 = -rotation_to_quaternion(rot_z(1.4))  # same rotation, opposite sign: still the short way
    for t in (0.0, 0.25, 0.5, 1.0):
        angle = rotation_angle(rot_z(0.2), quaternion_to_rotation(slerp(q0, q1, torch.tensor(t))))
        assert float(angle) == pytest.approx(1.2 * t, abs=1e-5)


def test_step_moves_exactly_one_step_until_arrival():
    current = torch.stack([pose(0.0, [0.0, 0.0, 0.0]), pose(0.3, [1.0, 0.0, 0.0]), pose(0.0, [0.0, 0.0, 0.0])])
    target = torch.stack([pose(1.2, [2.0, 1.0, 0.0]), pose(0.3, [1.1, 0.0, 0.0]), pose(0.0, [1.0, 0.0, 0.0])])
    step = 0.5
    distance = pose_distance(current, target)
    rounds = 0
    while rounds < 20:
        moved, arrived = step_pose_toward(current, target, step)
        new_distance = pose_distance(moved, target)
        for i in range(3):
            if float(distance[i]) <= step:
                assert bool(arrived[i]) and torch.equal(moved[i], target[i])
            else:
                assert not bool(arrived[i])
                assert float(new_distance[i]) == pytest.approx(float(distance[i]) - step, abs=1e-4)
        current, distance = moved, new_distance
        rounds += 1
        if bool(arrived.all()):
            break
    initial = pose_distance(torch.stack([pose(0.0, [0.0, 0.0, 0.0])]), torch.stack([pose(1.2, [2.0, 1.0, 0.0])]))
    assert rounds == math.ceil(float(initial[0]) / step)
    # a pure translation moves exactly `step` units (the official 0.5-unit move)
    moved, _ = step_pose_toward(pose(0.0, [0, 0, 0])[None], pose(0.0, [3.0, 0, 0])[None], 0.5)
    torch.testing.assert_close(moved[0, :, 3], torch.tensor([0.5, 0.0, 0.0]))


def test_nearest_pose_indices():
    candidates = torch.stack([pose(0.0, [0, 0, 0]), pose(0.0, [1, 0, 0]), pose(math.pi, [1.1, 0, 0])])
    queries = torch.stack([pose(0.0, [0.9, 0, 0]), pose(3.0, [1.0, 0, 0]), pose(0.0, [-5, 0, 0])])
    assert nearest_pose_indices(queries, candidates).tolist() == [1, 2, 0]


def test_rotation_quaternion_rotation_round_trip_on_random_rotations():
    """Every branch of the matrix-to-quaternion conversion: random rotations, and rotations by almost pi (w ~ 0)."""
    generator = torch.Generator().manual_seed(1)
    axes = torch.nn.functional.normalize(torch.randn(64, 3, generator=generator, dtype=torch.float64), dim=-1)
    half = torch.full((64, 1), math.pi / 2 - 1e-3, dtype=torch.float64)  # rotation angle pi - 2e-3
    near_pi = quaternion_to_rotation(torch.cat([torch.cos(half), torch.sin(half) * axes], dim=-1))
    rotations = torch.cat([random_rotations(200, 2), near_pi])
    assert torch.allclose(rotations @ rotations.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(264, 3, 3),
                          atol=1e-12)  # valid rotations to start from
    quaternions = rotation_to_quaternion(rotations)
    torch.testing.assert_close(quaternions.norm(dim=-1), torch.ones(264, dtype=torch.float64))
    assert bool((quaternions[:, 0] >= 0).all())  # the w >= 0 representative of q and -q
    torch.testing.assert_close(quaternion_to_rotation(quaternions), rotations)


def test_hand_computed_quaternions():
    # 90 degrees about x: (cos 45, sin 45, 0, 0); y -> z, z -> -y
    quarter_x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    half = math.sqrt(0.5)
    torch.testing.assert_close(rotation_to_quaternion(quarter_x), torch.tensor([half, half, 0.0, 0.0]))
    # 120 degrees about (1, 1, 1): (1/2, 1/2, 1/2, 1/2) permutes the axes x -> y -> z -> x
    cyclic = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(quaternion_to_rotation(torch.tensor([0.5, 0.5, 0.5, 0.5])), cyclic)
    torch.testing.assert_close(rotation_to_quaternion(cyclic), torch.tensor([0.5, 0.5, 0.5, 0.5]))
    # 180 degrees about y (w = 0), and an unnormalised quaternion is normalised first
    torch.testing.assert_close(rotation_to_quaternion(torch.diag(torch.tensor([-1.0, 1.0, -1.0]))).abs(),
                               torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(quaternion_to_rotation(torch.tensor([3.0 * math.cos(0.35), 0.0, 0.0,
                                                                    3.0 * math.sin(0.35)])), rot_z(0.7))


def test_all_pairs_by_broadcasting():
    queries = torch.stack([pose(0.0, [0.0, 0.0, 0.0]), pose(0.3, [1.0, 0.0, 0.0])])
    candidates = torch.stack([pose(0.0, [0.0, 2.0, 0.0]), pose(0.0, [1.0, 0.0, 0.0]), pose(0.3, [0.0, 0.0, 0.0])])
    distances = pose_distance(queries[:, None], candidates[None])
    torch.testing.assert_close(distances, torch.tensor([[2.0, 1.0, 0.3], [math.sqrt(5.0) + 0.3, 0.3, 1.0]]))
