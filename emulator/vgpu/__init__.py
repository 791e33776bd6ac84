"""The vGPU library: C sources and the build that turns them into the preloaded library."""
