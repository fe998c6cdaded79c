"""The linear baseline recovers a known linear relation and predicts only inside the mask."""

import numpy as np

from demist_bids.evaluation.linear_baseline import fit_linear_psr


def test_recovers_coefficients_across_subjects():
    rng = np.random.default_rng(0)
    subjects = []
    for _ in range(3):
        t1w, flair = rng.random((2, 10, 10, 10))
        mask = np.zeros((10, 10, 10))
        mask[2:8, 2:8, 2:8] = 1
        psr = 0.05 + 0.2 * t1w - 0.1 * flair + np.where(mask > 0, 0, 5.0)  # outside: ignored
        subjects.append((t1w, flair, psr, mask))
    model = fit_linear_psr(subjects)
    assert np.allclose([model.intercept, model.t1w, model.flair], [0.05, 0.2, -0.1], atol=1e-8)
    t1w, flair, psr, mask = subjects[0]
    pred = model.predict(t1w, flair, mask)
    assert np.allclose(pred[mask > 0], np.clip(psr[mask > 0], 0, None), atol=1e-6)
    assert not pred[mask == 0].any()
