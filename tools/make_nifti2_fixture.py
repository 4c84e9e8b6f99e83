#!/usr/bin/env python3
"""Reference values for simcase's NIfTI-2 reader (run once; the output is committed).

nibabel's own NIfTI-2 example (`nibabel/tests/data/example_nifti2.nii.gz`, shipped in the
nibabel 5.4.2 wheel that `crates/cli/tests/volumes.rs` also fetches) is loaded with nibabel,
and what nibabel reports is written to crates/cli/tests/fixtures/nifti2.json:

* the file's SHA-256, so the test knows it reads the same bytes;
* the shape of the first 3-D volume, and the 3x3 part of the affine (`img.affine`), by
  column (simcase's `Volume::dirs[i]` is column i: the step of voxel axis i in world space);
* the scaled voxel values (`img.get_fdata()`, i.e. `dataobj` with scl_slope/scl_inter) at
  the eight corners and 64 positions drawn by a fixed LCG, and the sum of all voxels.

Usage:  tools/.venv/bin/python tools/make_nifti2_fixture.py
Needs:  pip install nibabel==5.4.2 numpy==2.4.6
"""
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/cli/tests/fixtures/nifti2.json"
NIBABEL = "5.4.2"


def main():
    if nib.__version__ != NIBABEL:
        raise SystemExit(f"nibabel {nib.__version__} installed; the fixture pins {NIBABEL}")
    src = Path(nib.__file__).parent / "tests/data/example_nifti2.nii.gz"
    img = nib.load(src)
    if not isinstance(img, nib.Nifti2Image):
        raise SystemExit(f"{src}: not read as NIfTI-2 by nibabel")
    data = np.asarray(img.get_fdata(dtype=np.float64))
    while data.ndim > 3:  # the first volume of 4-D data, as simcase reads it
        data = data[..., 0]
    shape = [int(s) for s in data.shape] + [1] * (3 - data.ndim)
    data = data.reshape(shape)
    nx, ny, nz = shape
    positions = [
        (x, y, z) for x in (0, nx - 1) for y in (0, ny - 1) for z in (0, nz - 1)
    ]
    state = 12345
    for _ in range(64):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        k = (state >> 33) % (nx * ny * nz)
        positions.append((k % nx, (k // nx) % ny, k // (nx * ny)))
    affine = img.affine
    fixture = {
        "source": f"nibabel {NIBABEL} wheel, nibabel/tests/data/example_nifti2.nii.gz",
        "made_by": "tools/make_nifti2_fixture.py",
        "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "shape": shape,
        "dirs": [[float(affine[w, i]) for w in range(3)] for i in range(3)],
        # [x, y, z, value] per voxel
        "voxels": [[int(x), int(y), int(z), float(data[x, y, z])] for x, y, z in positions],
        "sum": float(data.sum()),
    }
    OUT.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT}: shape {shape}, {len(positions)} voxels, sum {fixture['sum']}")


if __name__ == "__main__":
    main()
