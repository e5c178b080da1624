# Source of notebooks/03_dicom_to_tensor.ipynb and its solution (python notebooks/build.py writes both).

# %% [markdown]
# # 3. From DICOM to tensor
#
# The paper: "images were preprocessed using standard techniques including histogram equalization,
# mean subtracting, and downsampling using standard bicubic interpolation to 227 x 227 pixels from
# original resolution." Before any of that, a mammogram has to be *read*: a DICOM file holds stored
# integers, and turning them into what a radiologist sees takes the DICOM grayscale pipeline. This
# notebook
#
# 1. writes a small mammogram-like DICOM file with pydicom and reads it back, by hand and with
#    `data_prep.read_image` (Modality LUT, VOI window, MONOCHROME1);
# 2. runs the paper's preprocessing step by step, as pictures (orientation, crop, bicubic
#    downsampling, histogram equalization, mean subtraction);
# 3. generates a small synthetic screening cohort, whose lesions are known, and follows the lesions
#    from the original image into the stored 227 x 227 one;
# 4. splits the cohort by patient, and shows what the leakage check catches.
#
# Files are written to a temporary folder that disappears with the kernel; nothing is downloaded.
# Run time on 2 CPU cores: `notebooks/README.md` lists the measured times.

# %% [markdown]
# ## Setup
#
# The kernel starts in the notebook's folder; the repository root (the first folder upwards holding
# `alexnet_np/`) goes on `sys.path`, so that the project imports without being installed.

# %%
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "alexnet_np").is_dir())
sys.path.insert(0, str(ROOT))

import alexnet_np  # first: it sets OpenBLAS's thread behaviour before NumPy loads
import csv
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
import numpy as np
import pydicom
from matplotlib.patches import Ellipse
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import gaussian_filter

import data_prep
from alexnet_np import to_network_input

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10, "axes.labelsize": 9})
set_matplotlib_formats("jpeg", pil_kwargs={"quality": 90})   # mostly mammograms: JPEG is half PNG's size
rng = np.random.default_rng(0)
TMP = tempfile.TemporaryDirectory(prefix="notebook03_")   # removed when the kernel stops
WORK = Path(TMP.name)

# %% [markdown]
# ## 1. A DICOM file, written and read
#
# We draw a right breast seen from above (craniocaudal view, "CC"): a half-ellipse against the right
# edge of the image, where the chest wall is, with smooth random tissue and one dense round lesion.
# `density` runs from 0 (air) to about 1 (dense tissue).

# %%
rows_, cols_ = 200, 160
r, c = np.mgrid[0:rows_, 0:cols_]
breast = ((r - 100) / 90) ** 2 + ((c - 160) / 120) ** 2 <= 1          # chest wall at the right edge
tissue = 0.45 + 2.5 * gaussian_filter(rng.standard_normal((rows_, cols_)), 4)
lesion = ((r - 80) ** 2 + (c - 95) ** 2) <= 9 ** 2
density = np.where(breast, np.clip(tissue, 0.1, 0.8) + 0.25 * lesion, 0.0)
print(f"breast pixels: {breast.mean():.0%} of the image; density in the breast "
      f"{density[breast].min():.2f} to {density[breast].max():.2f}")

# %% [markdown]
# A digital mammography detector stores 12 to 16-bit unsigned integers. Our file says:
#
# * `BitsStored = 12`: values 0..4095;
# * `PhotometricInterpretation = MONOCHROME1`: the *lowest* value is displayed *white*. Dense tissue
#   (white on a mammogram) therefore gets low stored values; the air around the breast gets 4095;
# * `RescaleSlope = 1`, `RescaleIntercept = -200`: the **Modality LUT**, stored -> "modality values"
#   (v = slope * stored + intercept);
# * `WindowCenter`, `WindowWidth` with `VOILUTFunction = LINEAR`: the **VOI window**, which range of
#   modality values the display spreads from black to white.

# %%
stored = np.rint(4095 - 3000 * density).astype(np.uint16)      # MONOCHROME1: dense -> low values


def write_mammogram(path, stored, center, width, photometric="MONOCHROME1", intercept=-200.0):
    """A Digital Mammography X-Ray Image (For Presentation) file with the given pixels and window."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"   # Digital Mammography, For Presentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PresentationIntentType = "MG", "FOR PRESENTATION"
    ds.PatientID, ds.ImageLaterality, ds.ViewPosition = "NOTEBOOK01", "R", "CC"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, intercept, "US"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, "LINEAR"
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


modality = stored.astype(float) - 200                         # what the file's Modality LUT gives
center = float(np.percentile(modality[breast], 50))
width = float(np.percentile(modality[breast], 99.5) - np.percentile(modality[breast], 0.5))
path = write_mammogram(WORK / "right_cc.dcm", stored, round(center), round(width))
ds = pydicom.dcmread(path)
print(f"{path.name}: {path.stat().st_size:,} bytes, {ds.Rows} x {ds.Columns}, {ds.PhotometricInterpretation}, "
      f"BitsStored {ds.BitsStored}, rescale {ds.RescaleSlope} x stored + ({ds.RescaleIntercept}), "
      f"window center {ds.WindowCenter} width {ds.WindowWidth} ({ds.VOILUTFunction})")

# %% [markdown]
# The window was chosen to span the breast's modality values (0.5th to 99.5th percentile), as a
# modality would. Reading it back by hand, step by step (DICOM PS3.3 C.11):
#
# 1. stored values (`ds.pixel_array`);
# 2. Modality LUT: $v = \text{slope}\cdot s + \text{intercept}$;
# 3. VOI window, LINEAR function (C.11.2.1.2.1): $y = \dfrac{v - (c - 0.5)}{w - 1} + 0.5$, clipped to
#    [0, 1];
# 4. MONOCHROME1: $y \leftarrow 1 - y$, so that bright means dense.
#
# `data_prep.read_image` must give the same image; pydicom's own `apply_modality_lut` and
# `apply_voi_lut` give a third, independent opinion on steps 2 and 3 (they scale the window's output
# to the stored range, which we undo).

# %%
s = ds.pixel_array
v = float(ds.RescaleSlope) * s + float(ds.RescaleIntercept)
c_, w_ = float(ds.WindowCenter), float(ds.WindowWidth)
windowed = np.clip((v - (c_ - 0.5)) / (w_ - 1) + 0.5, 0, 1)
by_hand = 1 - windowed

image, meta = data_prep.read_image(path)
print("data_prep.read_image meta:", {k: meta[k] for k in ("photometric", "voi", "laterality", "view")})
print(f"by hand vs data_prep.read_image: max |difference| = {np.abs(by_hand - image).max():.1e} "
      f"(image values in [0, 1], float32)")

lo = float(ds.RescaleIntercept)                          # pydicom's window output runs over the stored range
voi = apply_voi_lut(apply_modality_lut(s, ds), ds)
print(f"window by hand vs pydicom's apply_voi_lut: max |difference| = "
      f"{np.abs((voi - lo) / (2 ** ds.BitsStored - 1) - windowed).max():.1e}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
im = axes[0].imshow(s, cmap="gray")
fig.colorbar(im, ax=axes[0], label="stored value")
axes[0].set_title("1. stored values, shown as numbers\n(MONOCHROME1: dense = low)")
axes[1].hist(v[breast], bins=60, color="C0", label="breast")
axes[1].axvspan(c_ - w_ / 2, c_ + w_ / 2, color="C1", alpha=0.25, label="window c +- w/2")
axes[1].set(title="2. modality values v of the breast", xlabel="v = stored + (-200)", ylabel="pixels")
axes[1].legend(fontsize=8)
im = axes[2].imshow(windowed, cmap="gray", vmin=0, vmax=1)
fig.colorbar(im, ax=axes[2], label="windowed value")
axes[2].set_title("3. after the VOI window\n(still MONOCHROME1)")
im = axes[3].imshow(image, cmap="gray", vmin=0, vmax=1)
fig.colorbar(im, ax=axes[3], label="read_image value (bright = dense)")
axes[3].set_title("4. inverted: data_prep.read_image")
for ax in axes[[0, 2, 3]]:
    ax.set(xlabel="column (pixels)", ylabel="row (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The differences printed are float32 rounding (1e-7): three implementations of the same standard
# agree. Panel 1 is what a program that ignored `PhotometricInterpretation` would show: an inverted
# mammogram, background white. A network trained on a mix of MONOCHROME1 and MONOCHROME2 files read
# that way would see those images as negatives (about a quarter of the synthetic cohort's FFDM files
# below are MONOCHROME1).
#
# ## 2. The paper's preprocessing, step by step
#
# `data_prep.preprocess_steps(image, laterality)` runs each step and returns every intermediate:
#
# 1. **breast mask** (threshold and largest connected component) and **orientation**: every breast is
#    mirrored, if needed, to face like a left breast (chest wall on the left), so the network never
#    has to learn both sides;
# 2. **crop** to the mask's bounding box, pixels outside the mask set to 0 (labels and markers go);
# 3. **bicubic downsampling** to 227 x 227 (Keys' cubic, a = -0.5, anti-aliased: it equals Pillow's
#    `BICUBIC`);
# 4. **histogram equalization** over the breast (each breast pixel becomes the fraction of breast
#    pixels not brighter than it);
# 5. **uint8**: what the dataset stores. Mean subtraction comes later, at training time, because it
#    uses the *training* images' mean.

# %%
steps = data_prep.preprocess_steps(image, laterality="R", size=227)
geo = steps["geometry"]
print(f"flipped: {steps['flipped']}, crop box (top, bottom, left, right) of the oriented image: {geo.crop_box}, "
      f"original {geo.original_shape}")
print(f"stored image: {steps['final'].shape} {steps['final'].dtype}, breast covers {geo.breast_fraction:.0%} of it")

fig, axes = plt.subplots(1, 5, figsize=(16, 3.6))
for ax, key, title in zip(axes, ["original", "cropped", "resized", "equalized", "final"],
                          ["read (right breast)", "oriented + cropped", "bicubic to 227 x 227",
                           "equalized over the breast", "stored uint8"]):
    img = steps[key]
    im = ax.imshow(img, cmap="gray")
    ax.set(title=f"{title}\n{img.shape[0]} x {img.shape[1]}", xlabel="column (pixels)", ylabel="row (pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="0-255" if key == "final" else "value")
plt.tight_layout()
plt.show()

# %% [markdown]
# Two steps checked against an independent implementation: the bicubic resize against Pillow's
# (on the same float image), and the equalization against a few lines of NumPy (the empirical CDF
# over the breast mask; its histogram is then flat).

# %%
cropped = steps["cropped"]
pillow = np.asarray(Image.fromarray(cropped.astype(np.float32), mode="F").resize((227, 227), Image.BICUBIC))
print(f"data_prep.resize_bicubic vs Pillow BICUBIC: max |difference| = "
      f"{np.abs(data_prep.resize_bicubic(cropped, 227) - pillow).max():.1e} (values in [0, 1])")

mask = steps["stored_mask"]
values = np.clip(steps["resized"], 0, 1)[mask]
cdf = np.searchsorted(np.sort(values), values, side="right") / values.size
print(f"equalization by hand vs data_prep.equalize_histogram: max |difference| = "
      f"{np.abs(cdf - steps['equalized'][mask]).max():.1e}")
counts, _ = np.histogram(steps["equalized"][mask], bins=10, range=(0, 1))
print("breast pixels per tenth of the range after equalization:", counts.tolist())

# %% [markdown]
# Pillow computes in float32 with its own sums, hence differences of about 1e-7; the equalization
# agrees to float32 rounding. After equalization each tenth of the range holds about a tenth of
# the breast's pixels (the counts printed): that is what "flat histogram" means, and why the
# equalized images of dense and fatty breasts look alike in brightness.
#
# ## 3. A synthetic cohort, and where its lesions go
#
# The study's images are private. `data_prep.synthesize` generates a stand-in screening cohort in
# the paper's class proportions (FFDM: 552 negative, 376 recalled-benign, 375 malignant patients,
# scaled down), with four views per patient (only the affected breast's two for malignant patients,
# as in the paper), written as real DICOM files with a manifest. Unlike real data it knows where
# every lesion is: `findings.csv`. We make 12 patients, small images, and build the stored dataset
# (HDF5) with `data_prep.build_dataset`.

# %%
print("patients per class for 12 FFDM patients:", data_prep.class_counts("ffdm", 12))
manifest = data_prep.synthesize("ffdm", 12, seed=3, out_dir=WORK / "cohort", image_size=(320, 256),
                                difficulty=0.5, workers=2, progress=False)
rows = data_prep.read_manifest(manifest)
print(f"{len(rows)} images; first manifest row:",
      {k: rows[0][k] for k in ("image_path", "patient_id", "laterality", "view", "label")})
with open(manifest.parent / "findings.csv", newline="") as f:
    findings = list(csv.DictReader(f))
print(f"findings.csv: {len(findings)} findings; roles:",
      {role: sum(x["role"] == role for x in findings) for role in sorted({x["role"] for x in findings})})
print("one finding:", {k: findings[0][k] for k in ("image_path", "finding", "role", "row", "col", "radius_px")})

dataset_path = data_prep.build_dataset(manifest, WORK / "cohort.h5", size=227, workers=2, progress=False)
ds227 = data_prep.load_dataset(dataset_path)
print(f"stored: {ds227['images'].shape} {ds227['images'].dtype}, labels {np.bincount(ds227['labels']).tolist()} "
      f"(negative, recalled-benign, malignant)")

# %% [markdown]
# Each finding has a centre (`row`, `col`) and a radius in the pixels of the image *as read*. The
# `role` says whether it is the reason for the image's label (`malignant`, `recalled_benign`) or
# `incidental` (lymph nodes, vascular calcifications, found in every class). The dataset records,
# for each image, how it was oriented and cropped (`flipped`, `crop_box`, `original_shape`), and
# `data_prep.to_stored_coords` uses them to carry a point into the stored image: undo the mirror,
# subtract the crop's corner, scale by 227 / crop size (with pixel centres aligned).

# %%
by_image = {}
for x in findings:
    by_image.setdefault(x["image_path"], []).append(x)
paths = [str(p) for p in ds227["image_path"]]


def pick(label, view):
    """The first image of a class and view, a right breast if there is one (to show the mirroring)."""
    fits = [i for i, lab in enumerate(ds227["labels"]) if lab == label and ds227["view"][i] == view
            and (label == 0 or paths[i] in by_image)]
    return next((i for i in fits if ds227["laterality"][i] == "R"), fits[0])


examples = [pick(0, "MLO"), pick(1, "CC"), pick(2, "MLO")]

fig, axes = plt.subplots(2, 3, figsize=(12, 8))
for col, i in enumerate(examples):
    raw, _ = data_prep.read_image(manifest.parent / paths[i])
    found = by_image.get(paths[i], [])
    fr = np.array([float(x["row"]) for x in found])
    fc = np.array([float(x["col"]) for x in found])
    rad = np.array([float(x["radius_px"]) for x in found])
    sr, sc = data_prep.to_stored_coords(fr, fc, ds227["crop_box"][i], bool(ds227["flipped"][i]),
                                        ds227["original_shape"][i], 227)
    scale_r, scale_c = data_prep.stored_scale(ds227["crop_box"][i], 227)
    label = ["negative", "recalled-benign", "malignant"][ds227["labels"][i]]
    for row, img, rr, cc, (kr, kc), where in [(0, raw, fr, fc, (1, 1), "as read"),
                                              (1, ds227["images"][i], sr, sc, (scale_r, scale_c), "stored")]:
        ax = axes[row, col]
        ax.imshow(img, cmap="gray")
        for y_, x_, rr_, role in zip(rr, cc, rad, [x["role"] for x in found]):
            ax.add_patch(Ellipse((x_, y_), 2 * rr_ * kc, 2 * rr_ * kr, fill=False, lw=1.5,
                                 color="yellow" if role == "incidental" else "red"))
        ax.set(title=f"{label}, {ds227['laterality'][i]} {ds227['view'][i]}: {where}\n"
                     f"{img.shape[0]} x {img.shape[1]}, flipped {bool(ds227['flipped'][i]) if row else '-'}",
               xlabel="column (pixels)", ylabel="row (pixels)")
fig.suptitle("Findings from findings.csv: red = the label's lesion, yellow = incidental", y=1.0)
plt.tight_layout()
plt.show()

# %% [markdown]
# Top: the images as read, with the findings where `findings.csv` puts them. Bottom: the stored
# 227 x 227 images with the same findings carried over by `to_stored_coords`: right breasts are
# mirrored, the crop removes the air, and the "stretch" resize scales rows and columns differently,
# so a round lesion becomes an ellipse. Notebook 5 uses exactly this mapping to ask whether the
# network looks at the lesions.
#
# **Mean subtraction**, the paper's last step, happens when images enter the network:
# `alexnet_np.to_network_input(gray, mean, scale)` replicates the gray image into AlexNet's three
# input channels and subtracts the training split's mean image (`data_prep.compute_mean`), so the
# network sees deviations from the average breast.

# %%
mean = data_prep.compute_mean(dataset_path)
x = to_network_input(ds227["images"][examples], mean)
print(f"network input {x.shape} {x.dtype}: values {x.min():.0f} to {x.max():.0f}, "
      f"mean over the cohort {to_network_input(ds227['images'], mean).mean():.1e}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
im = axes[0].imshow(mean, cmap="gray")
fig.colorbar(im, ax=axes[0], label="gray level (0-255)")
axes[0].set_title("mean stored image of the cohort")
im = axes[1].imshow(x[2, 0], cmap="RdBu_r", vmin=-128, vmax=128)
fig.colorbar(im, ax=axes[1], label="gray level - mean")
axes[1].set_title("malignant example - mean\n(channel 0 of the input)")
for ax in axes:
    ax.set(xlabel="column (pixels)", ylabel="row (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The input's values have both signs around 0 (their range is printed): the mean over the whole
# cohort is 0 up to float32 rounding, because here we took the mean of all its images. In a study the mean comes from
# the training split only, so that nothing of the test images leaks into training, which brings us
# to splits.
#
# ## 4. Split by patient, and check it
#
# The paper held out "approximately 5% of our datasets ... for testing" and notes "testing data did
# not include any images used in training". With four views per patient, a subtler leak is
# possible: two views of the same breast are far more alike than any two patients. If one view is
# in training and the other in testing, the test measures how well the network recognises that
# breast. `data_prep.holdout_split` puts all images of a patient on one side (stratified by the
# patient's class); `data_prep.check_no_patient_leakage` raises an error naming every patient found
# on both sides.

# %%
patients, labels = ds227["patient_id"], ds227["labels"]
train, test = data_prep.holdout_split(patients, labels, test_fraction=0.25, seed=0)
data_prep.check_no_patient_leakage(patients, train, test)     # silent: no patient on both sides
print(f"patient-level split: {len(train)} training and {len(test)} test images, "
      f"{len(set(patients[test]))} of {len(set(patients))} patients in test; leakage check passed")

image_level = rng.permutation(len(patients))
train_i, test_i = image_level[len(test):], image_level[:len(test)]
try:
    data_prep.check_no_patient_leakage(patients, train_i, test_i)
except ValueError as error:
    print("image-level split, leakage check says:", str(error)[:300])

# %%
order = np.unique(patients)
fig, axes = plt.subplots(1, 2, figsize=(13, 3.2), sharey=True)
for ax, (tr, te, title) in zip(axes, [(train, test, "patient-level (holdout_split)"),
                                      (train_i, test_i, "image-level (random)")]):
    for side, idx, color in [("train", tr, "C0"), ("test", te, "C3")]:
        p = np.searchsorted(order, patients[idx])
        view = np.array([{"LCC": 0, "LMLO": 1, "RCC": 2, "RMLO": 3}[ds227["laterality"][i] + ds227["view"][i]] for i in idx])
        ax.scatter(p, view, color=color, s=40, label=side)
    ax.set(title=f"{title} split", xlabel="patient (last two digits of the id)", yticks=range(4), yticklabels=["L CC", "L MLO", "R CC", "R MLO"])
    ax.set_xticks(range(len(order)), [o[-2:] for o in order], fontsize=7)
axes[0].set_ylabel("view")
axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: every patient's column is one colour. Right: most patients have images on both sides, and
# the check names them. (Malignant patients have two images, the affected breast's views.)
#
# ## Exercises
#
# Replace each stub, then run the check below it. Solutions: `notebooks/solutions/03_dicom_to_tensor.ipynb`.
#
# **Exercise 1: the LINEAR window.** Write `linear_window(v, center, width)`: DICOM's LINEAR VOI
# function mapped to [0, 1] (section 1, step 3). The check writes files with other windows and both
# photometric interpretations and compares with `data_prep.read_image`.

# %% exercise
def linear_window(v, center, width):
    """Modality values v -> [0, 1] by DICOM's LINEAR window (PS3.3 C.11.2.1.2.1)."""
    # >>> student
    raise NotImplementedError("Exercise 1: write linear_window")
    # >>> solution
    return np.clip((v - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    # <<<

# %% check
for k, (cw, photometric) in enumerate([((1500, 1000), "MONOCHROME1"), ((900, 3001), "MONOCHROME2"), ((2000, 2), "MONOCHROME2")]):
    p = write_mammogram(WORK / f"window_{k}.dcm", stored, *cw, photometric=photometric)
    expected, _ = data_prep.read_image(p)
    got = linear_window(stored.astype(float) - 200, *cw)
    got = 1 - got if photometric == "MONOCHROME1" else got
    assert np.abs(got - expected).max() < 1e-5, f"window {cw}, {photometric}: max difference {np.abs(got - expected).max():.1e}"
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2: global histogram equalization.** Write `equalize(image, mask)`: inside the mask,
# each pixel becomes the fraction of mask pixels whose value is not above its own; outside, 0.

# %% exercise
def equalize(image, mask):
    """image (H, W) float in [0, 1], mask (H, W) bool -> (H, W) equalized over the mask, 0 outside."""
    # >>> student
    raise NotImplementedError("Exercise 2: write equalize")
    # >>> solution
    out = np.zeros(image.shape)
    values = image[mask]
    out[mask] = np.searchsorted(np.sort(values), values, side="right") / values.size
    return out
    # <<<

# %% check
for k in range(3):
    img = np.round(rng.random((40, 30)), 2)            # rounded: ties, which must share one value
    m = rng.random((40, 30)) < 0.6
    expected = data_prep.equalize_histogram(img, "global", m)
    got = equalize(img, m)
    assert np.abs(got - expected).max() < 1e-6, f"max difference {np.abs(got - expected).max():.1e}"
print("Exercise 2 passed")

# %% [markdown]
# **Exercise 3: a finding's place in the stored image.** Write `to_stored(row, col, crop_box,
# flipped, original_shape, size)` for the "stretch" resize: mirror the column if the image was
# flipped (`col -> width - 1 - col`), subtract the crop box's top and left, then scale each axis by
# `size / crop extent` with pixel centres aligned (`i -> (i + 0.5) * scale - 0.5`).

# %% exercise
def to_stored(row, col, crop_box, flipped, original_shape, size):
    """A point (row, col) of the image as read -> (row, col) in the stored size x size image."""
    top, bottom, left, right = crop_box
    # >>> student
    raise NotImplementedError("Exercise 3: write to_stored")
    # >>> solution
    if flipped:
        col = original_shape[1] - 1 - col
    row, col = row - top, col - left
    return (row + 0.5) * size / (bottom - top) - 0.5, (col + 0.5) * size / (right - left) - 0.5
    # <<<

# %% check
for i in range(len(ds227["images"])):
    r0, c0 = rng.uniform(0, 300), rng.uniform(0, 250)
    expected = data_prep.to_stored_coords(r0, c0, ds227["crop_box"][i], bool(ds227["flipped"][i]),
                                          ds227["original_shape"][i], 227)
    got = to_stored(r0, c0, tuple(int(v) for v in ds227["crop_box"][i]), bool(ds227["flipped"][i]),
                    tuple(int(v) for v in ds227["original_shape"][i]), 227)
    assert np.allclose(got, expected, atol=1e-9), f"image {i}: got {got}, expected {expected}"
print("Exercise 3 passed")

# %% [markdown]
# **Exercise 4: break the leakage check.** Write `image_split(patient_ids, test_fraction, seed)`, a
# split that ignores patients: shuffle the image indices, put the first `round(test_fraction * n)`
# in test and the rest in training. The check confirms that it is a proper split of all images, and
# that `check_no_patient_leakage` catches it.

# %% exercise
def image_split(patient_ids, test_fraction, seed):
    """(train indices, test indices), ignoring patients."""
    # >>> student
    raise NotImplementedError("Exercise 4: write image_split")
    # >>> solution
    order = np.random.default_rng(seed).permutation(len(patient_ids))
    n_test = round(test_fraction * len(patient_ids))
    return order[n_test:], order[:n_test]
    # <<<

# %% check
tr, te = image_split(patients, 0.3, seed=1)
assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(patients))), "not a split of all images"
assert len(te) == round(0.3 * len(patients)), "wrong test size"
try:
    data_prep.check_no_patient_leakage(patients, tr, te)
except ValueError as error:
    print("caught:", str(error)[:120], "...")
else:
    raise AssertionError("an image-level split of this cohort should put some patient on both sides")
print("Exercise 4 passed")
