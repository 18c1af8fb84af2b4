"""Losses of the Anonymizing Adapter Module (arXiv 2511.08666) and SimCLR NT-Xent (arXiv 2002.05709)."""

from __future__ import annotations

import math

import pytest
import torch

from anon_core.losses import aam_objective, classification_ce, latent_consistency, nt_xent


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written as the SimCLR paper states it: a loop over the 2N anchors, a loop over their candidates."""
    views = [*z1.tolist(), *z2.tolist()]
    n = len(z1)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        denom = 0.0
        for k in range(2 * n):
            if k != i:
                denom += math.exp(cos(views[i], views[k]) / temperature)
        total += -math.log(math.exp(cos(views[i], views[positive]) / temperature) / denom)
    return total / (2 * n)


@pytest.mark.parametrize(("n", "temperature"), [(1, 0.1), (2, 0.5), (7, 0.1), (16, 1.0)])
def test_nt_xent_matches_double_loop_reference(n, temperature):
    gen = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(n, 8, generator=gen, dtype=torch.float64)
    assert float(nt_xent(z1, z2, temperature)) == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-9)


def test_nt_xent_single_pair_is_zero():
    # with one video the positive is the only candidate
    assert float(nt_xent(torch.randn(1, 4), torch.randn(1, 4))) == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_symmetric_and_scale_invariant():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(10, 16, generator=gen), torch.randn(10, 16, generator=gen)
    torch.testing.assert_close(nt_xent(z1, z2), nt_xent(z2, z1))
    # cosine similarity: the length of an embedding does not matter
    torch.testing.assert_close(nt_xent(3.0 * z1, 0.2 * z2), nt_xent(z1, z2))


def test_nt_xent_temperature_effect():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(12, 16, generator=gen)
    z2 = z1 + 0.1 * torch.randn(12, 16, generator=gen)  # positives far more similar than negatives
    losses = [float(nt_xent(z1, z2, t)) for t in (0.05, 0.1, 0.5, 1.0)]
    assert losses == sorted(losses), f"agreeing views: a sharper temperature should give a lower loss, got {losses}"
    assert losses[0] < 0.01
    # as the temperature grows every candidate looks alike: loss -> log(2N - 1)
    assert float(nt_xent(z1, z2, 1e4)) == pytest.approx(math.log(23), rel=1e-3)


def test_nt_xent_errors():
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


def test_latent_consistency_ignores_padding():
    h = torch.randn(2, 3, 5)
    h_anon = h + 1.0
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    h_anon[~mask] = float("nan")
    assert float(latent_consistency(h, h_anon, mask)) == pytest.approx(1.0)
    assert float(latent_consistency(h, h + 2.0)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no clip"):
        latent_consistency(h, h, torch.zeros(2, 3, dtype=torch.bool))


def test_classification_ce_video_labels_over_clips():
    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([1, 3])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    expected = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 0], logits[0, 1], logits[0, 2], logits[1, 0]]), torch.tensor([1, 1, 1, 3])
    )
    torch.testing.assert_close(classification_ce(logits, labels, mask), expected)
    with pytest.raises(ValueError, match="labels shape"):
        classification_ce(logits, torch.tensor([1, 2, 3]))


def _objective_inputs(gen: torch.Generator):
    h = torch.randn(3, 4, 8, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    return dict(
        h=h,
        h_anon=h + 0.1 * torch.randn(3, 4, 8, generator=gen),
        mask=mask,
        static_a=torch.randn(3, 8, generator=gen),
        static_b=torch.randn(3, 8, generator=gen),
    )


def test_aam_objective_combines_parts_with_published_weights():
    gen = torch.Generator().manual_seed(0)
    inputs = _objective_inputs(gen)
    action, scene = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 2, generator=gen)  # per-clip and per-video
    labels = {"action": torch.tensor([0, 4, 2]), "scene": torch.tensor([1, 0, 1])}
    parts = aam_objective(**inputs, task_logits={"action": action, "scene": scene}, task_labels=labels)
    l_lc = latent_consistency(inputs["h"], inputs["h_anon"], inputs["mask"])
    l_action = classification_ce(action, labels["action"], inputs["mask"])
    l_scene = classification_ce(scene, labels["scene"])
    l_b = nt_xent(inputs["static_a"], inputs["static_b"], 0.1)
    torch.testing.assert_close(parts["l_lc"], l_lc)
    torch.testing.assert_close(parts["l_t"], l_action + l_scene)  # each task head weight 1
    torch.testing.assert_close(parts["l_b"], l_b)
    # L_B is maximised: it enters the total with a minus sign
    torch.testing.assert_close(parts["total"], 100 * l_lc + l_action + l_scene - l_b)
    weighted = aam_objective(
        **inputs, task_logits={"action": action, "scene": scene}, task_labels=labels,
        w_lc=1.0, w_t=2.0, w_b=0.5, task_weights={"scene": 3.0},
    )  # fmt: skip
    torch.testing.assert_close(weighted["total"], l_lc + 2 * (l_action + 3 * l_scene) - 0.5 * l_b)


def test_aam_objective_gradient_pushes_static_views_apart():
    gen = torch.Generator().manual_seed(0)
    inputs = _objective_inputs(gen)
    static_a = inputs.pop("static_a").requires_grad_()
    logits = torch.randn(3, 4, 5, generator=gen)
    parts = aam_objective(
        **inputs, static_a=static_a, task_logits={"action": logits}, task_labels={"action": torch.tensor([0, 1, 2])}
    )
    parts["total"].backward()
    with torch.no_grad():
        stepped = nt_xent(static_a - 0.01 * static_a.grad, inputs["static_b"])
    assert float(stepped) > float(parts["l_b"].detach()), "a descent step on the total must raise L_B"


def test_aam_objective_errors():
    inputs = _objective_inputs(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="differ"):
        aam_objective(**inputs, task_logits={"action": torch.randn(3, 4, 5)}, task_labels={"verb": torch.zeros(3)})
    with pytest.raises(ValueError, match="at least one task head"):
        aam_objective(**inputs, task_logits={}, task_labels={})
    with pytest.raises(ValueError, match="task_weights"):
        aam_objective(
            **inputs,
            task_logits={"action": torch.randn(3, 4, 5)},
            task_labels={"action": torch.tensor([0, 1, 2])},
            task_weights={"verb": 2.0},
        )
