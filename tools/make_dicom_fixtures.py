#!/usr/bin/env python3
"""Pixel parity fixtures: pydicom's decoding of pydicom's own test files, after the same
transforms simcase applies, as 8-bit grey levels at sampled positions.

simcase's DICOM pipeline: first frame; monochrome -> modality LUT (rescale or table), then
the VOI LUT table if present, else the first window (DICOM linear function), else min-max;
MONOCHROME1 inverted; colour -> RGB (8-bit / 255, 16-bit min-max). The reference below does
the same with pydicom (`apply_modality_lut`, `apply_voi_lut`), on pixels pydicom decodes
with its own plugins (numpy, Pillow, pylibjpeg, pyjpegls).

For each file: the shape, 200 pixel positions from a seeded generator, and the expected value
(0..255) of every channel there. crates/cli/tests/dicom_corpus.rs decodes the same files from
the pinned pydicom wheel and requires them equal (1 grey level only where its table of
tolerances says why).

Every file of FILES must decode here: one that pydicom cannot decode fails this script, unless
EXPECTED_FAILURES names it with the reason (the test checks DCMTK's pixels for those), and one
named there that now decodes fails it too. The windows are pydicom's own `apply_voi_lut`,
scaled from its output range; nothing of simcase's window formula is re-implemented here.

Usage: python3 tools/make_dicom_fixtures.py DIR...   (pydicom's data/test_files, and
       pydicom-data's data_store/data; the first holding a file is used)
Needs: pip install pydicom==3.0.* numpy pillow pylibjpeg pylibjpeg-libjpeg pyjpegls
"""
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

OUT = Path(__file__).resolve().parent.parent / "crates/cli/tests/fixtures/pydicom_pixels.json"

FILES = [
    "CT_small.dcm",  # explicit LE, signed, rescale, window
    "MR_small.dcm",  # explicit LE, signed
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "JPEG2000.dcm",
    "JPEG-LL.dcm",  # JPEG lossless, process 14
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "SC_rgb.dcm",
    "SC_rgb_16bit.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_ybr_full_uncompressed.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "US1_UNCR.dcm",
    "US1_J2KR.dcm",
    "RG1_UNCR.dcm",  # CR, MONOCHROME1 in some exports
    "vlut_04.dcm",  # VOI LUT table
    "mlut_18.dcm",  # modality LUT table
    "OBXXXX1A.dcm",
    "color-px.dcm",
    "MR2_J2KR.dcm",
    "693_J2KR.dcm",
    "rtdose.dcm",  # 32-bit, multi-frame
    "JPEG-lossy.dcm",  # JPEG Extended, 12-bit
    "JPGExtended.dcm",  # JPEG Extended, 12-bit
    "rtdose_rle.dcm",  # RLE, 32-bit, multi-frame
    "SC_rgb_rle_32bit.dcm",  # RLE, 32-bit RGB
    "liver_1frame.dcm",  # 1-bit segmentation mask
    "liver_expb_1frame.dcm",  # the same, big endian
    "gdcm-US-ALOKA-16.dcm",  # segmented 16-bit palette
    "gdcm-US-ALOKA-16_big.dcm",  # the same, big endian
    "SC_rgb_jpeg.dcm",  # implicit-VR data set under an explicit syntax's meta group
]

# Files of FILES that pydicom cannot decode, with why; each must fail here as said.
EXPECTED_FAILURES = {
    # NEMA's NM1_JPLY: its scan header says Se = 0; pylibjpeg-libjpeg and Pillow refuse it.
    # DCMTK decodes it (with a warning), and so does simcase: dicom_corpus checks it
    # against DCMTK, and against its fixed copy JPGExtended.dcm.
    "JPEG-lossy.dcm": "scan header invalid for sequential JPEG",
}


def first(v):
    """The first value of a multi-valued attribute, as a float."""
    return float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)


def reference(ds):
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    if frames > 1:
        arr = arr[0]
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        x = apply_color_lut(arr, ds).astype(np.float64)
        # 16-bit palette entries are shown at full scale (entry / 65535), as DICOM means them.
        y = x / 65535.0 if x.max() > 255 else x / 255.0
    elif spp == 1:
        x = apply_modality_lut(arr, ds).astype(np.float64)
        voi = "VOILUTSequence" in ds
        win = "WindowCenter" in ds and "WindowWidth" in ds
        # simcase's choice, as its README says: the VOI LUT table, else the first window of
        # width >= 1, else min-max. The transforms themselves are pydicom's.
        if voi:
            item = ds.VOILUTSequence[0]
            bits = int(item.LUTDescriptor[2])
            y = apply_voi_lut(x, ds, index=0, prefer_lut=True).astype(np.float64)
            y = y / float(2**bits - 1)
        elif win and first(ds.WindowWidth) >= 1:
            # pydicom's windowing maps onto its output range [y_min, y_max] (set by the bits
            # stored, signedness and rescale); its own extremes give that range.
            lo, hi = apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0, prefer_lut=False)
            y = (apply_voi_lut(x, ds, index=0, prefer_lut=False) - lo) / (hi - lo)
        else:
            lo, hi = x.min(), x.max()
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        if pi == "MONOCHROME1":
            y = 1.0 - y
        y = np.clip(y, 0, 1)[..., None].repeat(3, axis=-1)
    else:
        x = arr.astype(np.float64)
        bits = int(ds.BitsAllocated)
        if bits == 8:
            y = x / 255.0
        else:
            lo, hi = x.min(), x.max()
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.round(y * 255.0).astype(int)


def main():
    dirs = [Path(a) for a in sys.argv[1:]]
    rng = np.random.default_rng(1234)
    out = []
    problems = []
    for name in FILES:
        p = next((d / name for d in dirs if (d / name).exists()), None)
        if p is None:
            problems.append(f"{name}: not found in {', '.join(map(str, dirs))}")
            continue
        ds = pydicom.dcmread(p)
        bits = int(getattr(ds, "BitsAllocated", 0))
        try:
            y = reference(ds)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            if name in EXPECTED_FAILURES:
                print(f"{name}: fails as expected ({EXPECTED_FAILURES[name]}): {e}")
            else:
                problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if name in EXPECTED_FAILURES:
            problems.append(f"{name}: expected to fail ({EXPECTED_FAILURES[name]}), decoded")
            continue
        h, w = y.shape[:2]
        pos = [(int(rng.integers(h)), int(rng.integers(w))) for _ in range(200)]
        out.append({
            "file": name,
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "photometric": str(ds.PhotometricInterpretation),
            "bits_allocated": bits,
            "rows": h,
            "columns": w,
            "positions": pos,
            "values": [y[r, c].tolist() for r, c in pos],
            "mean": float(y.mean()),
        })
        print(f"{name}: {h}x{w} {ds.PhotometricInterpretation}")
    if problems:
        sys.exit("make_dicom_fixtures: nothing written:\n  " + "\n  ".join(problems))
    fixture = {
        "generator": "tools/make_dicom_fixtures.py",
        "pydicom": pydicom.__version__,
        "requested": FILES,
        "expected_failures": EXPECTED_FAILURES,
        "files": out,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=0))
    print(f"wrote {OUT} ({len(out)} files)")


if __name__ == "__main__":
    main()
