"""The chest phantom itself: small and thin shapes the other tests rely on build without error."""

import numpy as np
import pytest
from phantoms import make_chest_phantom


@pytest.mark.parametrize(("shape", "seed"), [((8, 96, 96), 2), ((8, 64, 64), 1), ((8, 32, 32), 0)])
def test_vessels_at_the_volume_border_are_clipped(shape, seed):
    phantom = make_chest_phantom(shape=shape, seed=seed)
    assert phantom.lesion_mask.shape == shape
    assert np.isin(np.unique(phantom.lungs), [0, 1, 2]).all()
    assert (phantom.lungs == 1).any() and (phantom.lungs == 2).any()
