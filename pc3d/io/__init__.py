"""Point clouds, labels, calibration and images: readers and writers validated at the edge."""
