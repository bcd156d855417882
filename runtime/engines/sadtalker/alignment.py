"""Portrait geometry: the face crop the renderer sees and the 224 px alignment of the recon net.

Upstream finds 68 landmarks with face-alignment/facexlib; we take the few points it uses from
MediaPipe's 478-point mesh (which the service already runs), so nothing is downloaded:
eye centres, eye corners, nose tip and mouth corners.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import RECON_REFERENCE_LANDMARKS_3D, PipelineConfig

PIPELINE = PipelineConfig()

# MediaPipe face-mesh indices. "Left" is image-left (the subject's right).
LEFT_EYE_CONTOUR = [33, 160, 158, 133, 153, 144]
RIGHT_EYE_CONTOUR = [362, 385, 387, 263, 373, 380]
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (362, 263)
NOSE_TIP = 1
MOUTH_LEFT, MOUTH_RIGHT = 61, 291


@dataclass(frozen=True)
class FaceCrop:
    """A square, axis-aligned face region of the portrait.

    center: (x, y) pixels; side: pixels (may extend past the image; pixels outside are
    replicated from the border); size: side length of the crop in the renderer (256 or 512).
    """

    center: tuple[float, float]
    side: float
    size: int

    @property
    def to_crop(self) -> np.ndarray:
        """2x3 affine: portrait pixel -> crop pixel."""
        scale = self.size / self.side
        x0, y0 = self.center[0] - self.side / 2, self.center[1] - self.side / 2
        return np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)

    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.center[0] - self.side / 2, self.center[1] - self.side / 2
        return x0, y0, x0 + self.side, y0 + self.side

    def crop(self, portrait: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 portrait -> (size, size, 3) uint8 crop."""
        interpolation = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        if interpolation == cv2.INTER_AREA:
            # INTER_AREA needs a plain resize: cut (with border replication) first, then shrink.
            x0, y0, x1, y1 = (int(round(v)) for v in self.box())
            h, w = portrait.shape[:2]
            pad = max(0, -x0, -y0, x1 - w, y1 - h)
            padded = cv2.copyMakeBorder(portrait, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else portrait
            region = padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
            return cv2.resize(region, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return cv2.warpAffine(portrait, self.to_crop, (self.size, self.size), flags=interpolation,
                              borderMode=cv2.BORDER_REPLICATE)

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) portrait pixels -> (N, 2) crop pixels."""
        m = self.to_crop
        return points @ m[:, :2].T + m[:, 2]


def face_crop(landmarks: np.ndarray, size: int) -> FaceCrop:
    """The crop of upstream's `crop` preprocessing (an FFHQ-style quad from eyes and mouth),
    taken as the square bounding the quad.

    landmarks: (478, 2) MediaPipe points in portrait pixels.
    """
    eye_left = landmarks[LEFT_EYE_CONTOUR].mean(axis=0)
    eye_right = landmarks[RIGHT_EYE_CONTOUR].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    # Quad axis: the eye line corrected by the perpendicular of the eye-mouth line.
    x_axis = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1, 1])
    x_axis /= np.hypot(*x_axis)
    x_axis *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y_axis = np.flipud(x_axis) * np.array([-1, 1])
    center = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([center - x_axis - y_axis, center - x_axis + y_axis,
                     center + x_axis + y_axis, center + x_axis - y_axis])
    low, high = quad.min(axis=0), quad.max(axis=0)
    side = float(max(high - low))
    mid = (low + high) / 2
    return FaceCrop(center=(float(mid[0]), float(mid[1])), side=side, size=size)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) MediaPipe points -> (5, 2): eye centres (mean of the two corners, as upstream's
    68-point `extract_5p`), nose tip, mouth corners."""
    return np.stack([
        landmarks[list(LEFT_EYE_CORNERS)].mean(axis=0),
        landmarks[list(RIGHT_EYE_CORNERS)].mean(axis=0),
        landmarks[NOSE_TIP],
        landmarks[MOUTH_LEFT],
        landmarks[MOUTH_RIGHT],
    ]).astype(np.float64)


def fit_similarity(points_2d_up: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares weak-perspective fit of the reference 3D landmarks onto image points
    (upstream's `POS`). points_2d_up: (5, 2) with y pointing up. Returns translation (2,)
    and scale."""
    reference = RECON_REFERENCE_LANDMARKS_3D.astype(np.float64)
    count = len(reference)
    system = np.zeros((2 * count, 8))
    system[0::2, 0:3] = reference
    system[0::2, 3] = 1
    system[1::2, 4:7] = reference
    system[1::2, 7] = 1
    solution, *_ = np.linalg.lstsq(system, points_2d_up.reshape(-1), rcond=None)
    scale = (np.linalg.norm(solution[0:3]) + np.linalg.norm(solution[4:7])) / 2
    return np.array([solution[3], solution[7]]), float(scale)


@dataclass(frozen=True)
class ReconAlignment:
    image: np.ndarray  # (224, 224, 3) uint8 input of the recon net
    crop_params: np.ndarray  # (3,) float32: scale, tx, ty; the last 3 of the 73 coefficients


def align_for_recon(crop_image: np.ndarray, crop_points: np.ndarray) -> ReconAlignment:
    """Upstream's `align_img`: scale the crop so the face matches the reference landmarks at
    102 px per unit, and cut the 224 px window centred on the fitted translation.

    crop_image: (S, S, 3) uint8; crop_points: (5, 2) landmark pixels in that crop.
    """
    height, width = crop_image.shape[:2]
    points_up = crop_points.copy()
    points_up[:, 1] = height - 1 - points_up[:, 1]
    translation, fitted_scale = fit_similarity(points_up)
    scale = PIPELINE.recon_rescale_factor / fitted_scale
    target = PIPELINE.recon_input_size

    scaled_w, scaled_h = int(width * scale), int(height * scale)
    left = int(scaled_w / 2 - target / 2 + (translation[0] - width / 2) * scale)
    up = int(scaled_h / 2 - target / 2 + (height / 2 - translation[1]) * scale)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(crop_image, (scaled_w, scaled_h), interpolation=interpolation)
    aligned = np.zeros((target, target, 3), dtype=np.uint8)  # outside the image stays black
    src_x0, src_y0 = max(left, 0), max(up, 0)
    src_x1, src_y1 = min(left + target, scaled_w), min(up + target, scaled_h)
    if src_x1 > src_x0 and src_y1 > src_y0:
        aligned[src_y0 - up:src_y1 - up, src_x0 - left:src_x1 - left] = resized[src_y0:src_y1, src_x0:src_x1]
    params = np.array([scale, translation[0], translation[1]], dtype=np.float32)
    return ReconAlignment(aligned, params)
