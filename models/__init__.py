"""The verification science: signature types, preprocessing, features, DTW, scoring.

Imports nothing else of ours; ``kiosk`` and ``tools`` build on it.
"""

from models.image import SignatureImage, SignatureImageError
from models.trajectory import DeviceInfo, Trajectory, TrajectoryError

__all__ = [
    "DeviceInfo",
    "SignatureImage",
    "SignatureImageError",
    "Trajectory",
    "TrajectoryError",
]
