"""Reading images and annotations, density targets, training patches and augmentation."""
from minifcrn.data.annotations import density_map, read_points
from minifcrn.data.images import read_image, standardize
from minifcrn.data.samples import Sample, find_pairs, load_samples, random_patch
from minifcrn.errors import InputError

__all__ = ["InputError", "read_image", "standardize", "read_points", "density_map", "Sample",
           "find_pairs", "load_samples", "random_patch"]
