"""The written FLAIR->T1w transform means what its name says to other readers (nitransforms)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from demist_bids.preprocessing.grids import resample
from demist_bids.preprocessing.registration import write_itk_affine
from tests.utils.damaged import blob


def test_nitransforms_resamples_the_flair_onto_the_t1w_as_demist_does(tmp_path):
    import nitransforms as nt

    data = blob()
    data[10:14, 10:30, 15:20] += 80.0  # something asymmetric to align
    affine = np.eye(4)
    affine[:3, 3] = -20.0
    t1w = nib.Nifti1Image(data, affine)
    t1w_to_flair = sitk.Euler3DTransform((0, 0, 0), 0.1, 0.0, 0.05, (3, -2, 1))  # ITK, LPS
    flair = resample(t1w, affine, data.shape, order=1, transform=t1w_to_flair.GetInverse())
    nib.save(t1w, tmp_path / "t1w.nii.gz")
    nib.save(flair, tmp_path / "flair.nii.gz")
    xfm = tmp_path / "sub-01_from-FLAIR_to-T1w_mode-image_xfm.txt"
    write_itk_affine(t1w_to_flair, xfm)

    assert "AffineTransform_double_3_3" in xfm.read_text()
    ours = resample(flair, affine, data.shape, order=1, transform=sitk.ReadTransform(str(xfm)))
    theirs = nt.resampling.apply(nt.linear.load(xfm, fmt="itk"), tmp_path / "flair.nii.gz",
                                 reference=tmp_path / "t1w.nii.gz", order=1)
    brain = data > 10
    ours, theirs = ours.get_fdata()[brain], np.asanyarray(theirs.dataobj)[brain]
    assert np.abs(ours - data[brain]).mean() < 1.5  # back on the T1w: the transform is right
    assert np.abs(theirs - ours).mean() < 0.5  # and nitransforms reads it the same way
