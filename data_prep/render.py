"""Z-buffered ray casting of ellipsoids into an RGB image, a part-label map and a depth map that agree pixel for pixel.

Every pixel (u, v) casts the ray K^-1 [u, v, 1]; its parameter at a hit is the planar depth z (Blender's Z pass), the
nearest hit wins, and the label, depth and colour all come from that one hit.
"""

import dataclasses

import cv2
import numpy as np

from mtha_tf import surreal


@dataclasses.dataclass
class Ellipsoid:
    """An ellipsoid in camera coordinates: centre [3], axes [3, 3] (orthonormal columns), radii [3]."""

    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    label: int
    appearance: "Appearance"


@dataclasses.dataclass
class Appearance:
    """Two colours mixed by a periodic pattern in the ellipsoid's own frame, so the texture moves with the body, and
    optionally a patch of a third colour on its front (local z > 0): a face, a shirt front. A body whose front
    looks like its back renders, reflected in depth (facing the other way, its left and right sides swapped), the
    same image: its left and right could not be learnt."""

    base: np.ndarray
    accent: np.ndarray
    pattern_frequency: np.ndarray  # [3] cycles per metre along the local axes; zeros give a plain colour
    front: np.ndarray | None = None  # the front patch's colour
    front_patch: tuple = (np.inf, -np.inf, np.inf)  # its half-width in local x and its range in local y, metres


def _pixel_rays(intrinsics, height, width):
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1]], axis=-1)


def _screen_box(ellipsoid, intrinsics, height, width):
    """Pixel rows/cols that can see the ellipsoid: the projection of its bounding sphere, clipped to the image."""
    bound = float(np.max(ellipsoid.radii))
    z = ellipsoid.centre[2]
    if z - bound <= 0.05:  # reaches behind the camera: test every pixel
        return 0, height, 0, width
    centre = surreal.project(ellipsoid.centre, intrinsics)
    reach = intrinsics[0, 0] * bound / (z - bound) + 1
    col0, col1 = int(np.floor(centre[0] - reach)), int(np.ceil(centre[0] + reach)) + 1
    row0, row1 = int(np.floor(centre[1] - reach)), int(np.ceil(centre[1] + reach)) + 1
    return max(row0, 0), min(row1, height), max(col0, 0), min(col1, width)


def render(ellipsoids, background, light, intrinsics=surreal.INTRINSICS):
    """Returns (rgb uint8 [H, W, 3], labels uint8 [H, W], depth float32 [H, W] with 1e10 for background).

    `light` is (ambient, direction [3] in camera coordinates) for Lambertian shading.
    """
    height, width = background.shape[:2]
    rays = _pixel_rays(intrinsics, height, width)
    zbuffer = np.full((height, width), np.inf)
    labels = np.zeros((height, width), np.uint8)
    rgb = background.astype(np.float64) / 255.0
    ambient, direction = light
    for ellipsoid in ellipsoids:
        r0, r1, c0, c1 = _screen_box(ellipsoid, intrinsics, height, width)
        if r0 >= r1 or c0 >= c1:
            continue
        d = np.concatenate([rays[r0:r1, c0:c1], np.ones((r1 - r0, c1 - c0, 1))], axis=-1)
        # Into the frame where the ellipsoid is the unit sphere: o' + t d', with the ray origin at the camera centre.
        origin = (ellipsoid.axes.T @ -ellipsoid.centre) / ellipsoid.radii
        direction_local = (d @ ellipsoid.axes) / ellipsoid.radii
        a = np.einsum("...i,...i", direction_local, direction_local)
        b = 2.0 * direction_local @ origin
        c = origin @ origin - 1.0
        disc = b * b - 4 * a * c
        hit = disc >= 0
        t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a), np.inf)
        closer = hit & (t > 0) & (t < zbuffer[r0:r1, c0:c1])
        if not closer.any():
            continue
        local = origin + np.where(closer, t, 0.0)[..., None] * direction_local  # on the unit sphere where closer
        normal = (local / ellipsoid.radii) @ ellipsoid.axes.T
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        shade = ambient + (1 - ambient) * np.clip(-(normal @ direction), 0.0, 1.0)
        metric = local * ellipsoid.radii
        look = ellipsoid.appearance
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (metric @ look.pattern_frequency))
        colour = look.base + (look.accent - look.base) * mix[..., None] ** 4
        if look.front is not None:
            half_width, bottom, top = look.front_patch
            x, y, z = np.moveaxis(metric, -1, 0)
            patch = (z > 0) & (np.abs(x) < half_width) & (y > bottom) & (y < top)
            colour = np.where(patch[..., None], look.front, colour)
        zbuffer[r0:r1, c0:c1][closer] = t[closer]
        labels[r0:r1, c0:c1][closer] = ellipsoid.label
        rgb[r0:r1, c0:c1][closer] = (colour * shade[..., None])[closer]
    depth = np.where(np.isfinite(zbuffer), zbuffer, surreal.DEPTH_BACKGROUND_VALUE).astype(np.float32)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), labels, depth


def random_background(rng, height, width):
    """An indoor-like static backdrop: wall and floor gradients, furniture-like boxes, smooth noise."""
    v, u = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    wall, floor = rng.uniform(0.2, 0.9, (2, 3))
    horizon = rng.uniform(0.55, 0.85)
    image = np.where((v < horizon)[..., None], wall * (0.8 + 0.3 * u[..., None]), floor * (0.6 + 0.5 * v[..., None]))
    for _ in range(rng.integers(2, 7)):
        top, left = rng.uniform(0, 1, 2)
        bottom, right = top + rng.uniform(0.1, 0.5), left + rng.uniform(0.05, 0.4)
        inside = (v >= top) & (v < bottom) & (u >= left) & (u < right)
        image[inside] = (
            rng.uniform(0.05, 1.0, 3) * (0.85 + 0.15 * np.sin(40 * u[inside] * rng.uniform(0.2, 2)))[:, None]
        )
    noise = cv2.resize(rng.normal(0, 0.06, (height // 16, width // 16, 3)), (width, height), cv2.INTER_CUBIC)
    return (np.clip(image + noise, 0, 1) * 255).astype(np.uint8)
