"""heartjobs: train GANs on heart CT slices and measure them, as versioned batch jobs."""

__version__ = "0.1.0"
