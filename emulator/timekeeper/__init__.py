"""The Timekeeper: one virtual clock for every process of an emulated deployment."""
