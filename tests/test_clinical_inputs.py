"""Inputs as clinics hold them, each against pixel values computed by hand: DICOM through its
modality LUT and a window (asked for, the file's, none), multi-frame DICOM, a series folder and
NIfTI volumes by slice, and one bit-depth rule for plain images. Every file is written here."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mkcnet.data.images import Window, is_image_name, parse_window, read_image, read_volume
from mkcnet.errors import UserError


def write_dicom(path: Path, frames: np.ndarray, slope=1.0, intercept=0.0, window=None, position=None,
                series="1.2.3", monochrome1=False) -> Path:
    """A CT DICOM of N×H×W stored values (uint16), one frame or several."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    frames = frames[None] if frames.ndim == 2 else frames
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", series
    ds.Rows, ds.Columns = frames.shape[1:]
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if position is not None:
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, position], [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = 1
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# Stored 0, 250, 500, 1000 with slope 2, intercept -1000: -1000, -500, 0, 1000 HU.
STORED = np.array([[0, 250], [500, 1000]])


def test_dicom_modality_lut_and_windows_by_hand(tmp_path):
    f = write_dicom(tmp_path / "ct.dcm", STORED, slope=2, intercept=-1000, window=(0, 2000))
    # The file's window C 0, W 2000: -1000 → 0, -500 → 0.25·255 = 63.75 → 64, 0 → 127.5 → 128, 1000 → 255.
    assert read_image(f)[..., 0].tolist() == [[0, 64], [128, 255]]
    # Asked for C -500, W 1000: -1000 → 0, -500 → 127.5 → 128, 0 → 255, 1000 → clipped 255.
    assert read_image(f, window=Window(-500, 1000))[..., 0].tolist() == [[0, 128], [255, 255]]
    volume = read_volume(f, Window(-500, 1000, "test"))
    assert volume.window_source == "asked" and volume.describe() == "test window (C -500, W 1000)"
    assert read_volume(f).describe() == "window (C 0, W 2000) from the file"
    # No window in the file: the range -1000…1000, the same numbers as the file's window here.
    plain = write_dicom(tmp_path / "plain.dcm", STORED, slope=2, intercept=-1000)
    assert read_image(plain)[..., 0].tolist() == [[0, 64], [128, 255]]
    assert read_volume(plain).window_source == "range"
    inverted = write_dicom(tmp_path / "m1.dcm", STORED, slope=2, intercept=-1000, window=(0, 2000), monochrome1=True)
    assert read_image(inverted)[..., 0].tolist() == [[255, 191], [127, 0]]


def test_a_split_of_dicom_files_is_decoded_through_the_models_window(tmp_path):
    """Training, evaluation and the CAMs read a split as `mkcnet predict` reads one file: through the model's
    window (its InputSpec's), else the file's; the decoded-image cache keeps the two apart."""
    from mkcnet.config import InputSpec
    from mkcnet.data.dataset import decode_images

    files = [write_dicom(tmp_path / "ct.dcm", STORED, slope=2, intercept=-1000, window=(0, 2000))]
    cache = tmp_path / "cache"
    windowed = decode_images(files, InputSpec(1, 2, (0.5,), (0.25,), window=(-500, 1000)), cache=cache, progress=False)
    assert windowed[0, 0].tolist() == [[0, 128], [255, 255]]  # as test_dicom_modality_lut_and_windows_by_hand
    assert decode_images(files, InputSpec(1, 2, (0.5,), (0.25,)), cache=cache, progress=False)[0, 0].tolist() == [
        [0, 64], [128, 255]]  # the file's own window
    assert len(list(cache.glob("*.npy"))) == 2


def test_multi_frame_dicom_gives_the_slice_asked_for(tmp_path):
    frames = np.stack([np.full((3, 4), v) for v in (0, 100, 200)])
    f = write_dicom(tmp_path / "frames.dcm", frames, window=(100, 200))  # 0 → 0, 100 → 128, 200 → 255
    volume = read_volume(f)
    assert volume.count == 3 and volume.kind == "multi-frame DICOM"
    assert read_image(f).shape == (3, 4, 1) and (read_image(f) == 128).all()  # the middle one by default
    assert (read_image(f, slice=0) == 0).all() and (read_image(f, slice=2) == 255).all()
    assert volume.describe(2) == "slice 2 of 3 (0-based), window (C 100, W 200) from the file"
    with pytest.raises(UserError, match="slice 3 does not exist: this multi-frame DICOM has 3 slice"):
        read_image(f, slice=3)


def test_a_series_folder_is_ordered_along_the_slices(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for name, value, z in (("b.dcm", 200, 5.0), ("a.dcm", 0, -5.0), ("c.dcm", 100, 0.0)):  # names out of order
        write_dicom(series / name, np.full((2, 2), value), window=(100, 200), position=z)
    (series / "notes.txt").write_text("not DICOM")
    volume = read_volume(series)
    assert volume.count == 3 and volume.kind == "DICOM series"
    assert [int(volume.image(k)[0, 0, 0]) for k in range(3)] == [0, 128, 255]  # by position: -5, 0, 5
    write_dicom(series / "d.dcm", np.zeros((2, 2)), series="9.9.9")
    with pytest.raises(UserError, match="2 DICOM series"):
        read_volume(series)


def nifti(path: Path, data: np.ndarray, affine=None, slope_inter=None) -> Path:
    import nibabel as nib

    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if slope_inter is not None:
        image.header.set_slope_inter(*slope_inter)
    nib.save(image, path)
    return path


def test_nifti_volume_slices_by_hand(tmp_path):
    x, y, z = np.meshgrid(np.arange(4), np.arange(3), np.arange(5), indexing="ij")
    data = (x + 10 * y + 100 * z).astype(np.int16)  # voxel [x, y, z] holds x + 10y + 100z
    identity = Window(127.5, 255)  # 0 → 0 … 255 → 255: the rendered value is the voxel's
    f = nifti(tmp_path / "vol.nii.gz", data)
    assert is_image_name(f) and read_volume(f).count == 5
    middle = read_image(f, window=identity)[..., 0]  # slice 2 of 5
    # Rows run anterior → posterior (y = 2, 1, 0), columns the patient's right → left (x = 3 … 0).
    assert middle.shape == (3, 4)
    assert middle[0, 0] == 3 + 20 + 200 and middle[2, 3] == 200 and middle[0, 3] == 220 and middle[2, 0] == 203
    assert (read_image(f, slice=0, window=identity)[..., 0] == middle - 200).all()
    # The same anatomy stored left-right mirrored, with an affine that says so: the same picture.
    mirrored = nifti(tmp_path / "las.nii", data[::-1].copy(), affine=np.diag([-1.0, 1, 1, 1]))
    assert (read_image(mirrored, window=identity)[..., 0] == middle).all()
    # scl_slope/scl_inter apply before the window: stored v is 2v - 100 in its units, so voxel 200 is
    # 300, half-way through the window 100…500 (127.5 → 128), and voxel 223 is 346: 246/400·255 = 156.8 → 157.
    scaled = read_image(nifti(tmp_path / "scaled.nii", data, slope_inter=(2.0, -100.0)), window=Window(300, 400))
    assert scaled[2, 3, 0] == 128 and scaled[0, 0, 0] == 157


def test_one_bit_depth_rule_for_plain_images(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.tif")
    low = np.full((20, 30), 1000, np.uint16)  # a dim 16-bit image stays dim: never stretched per image
    Image.fromarray(low).save(tmp_path / "low.png")
    assert (read_image(tmp_path / "16.png") == read_image(tmp_path / "8.png")).all()
    assert (read_image(tmp_path / "16.tif")[..., 0] == grey).all()
    assert (read_image(tmp_path / "low.png") == 4).all()  # 1000 / 257 = 3.9


def test_multi_frame_tiff_and_gif_frames_are_chosen(tmp_path):
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 20, 30)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    rgb = [f.convert("RGB") for f in frames]
    rgb[0].save(tmp_path / "anim.gif", save_all=True, append_images=rgb[1:], duration=100)
    for name in ("stack.tif", "anim.gif"):
        assert read_volume(tmp_path / name).count == 3
        assert read_image(tmp_path / name).max() == 20  # the middle frame, not silently the first
        assert read_image(tmp_path / name, slice=2).max() == 30


def test_window_text():
    assert parse_window("-600,1500") == Window(-600, 1500)
    assert parse_window("lung").centre == -600
    with pytest.raises(UserError, match="unknown window"):
        parse_window("liver-ish")
    with pytest.raises(UserError, match="width must be positive"):
        parse_window("40,0")
