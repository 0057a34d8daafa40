"""Survey data: constants, the HDF5 store, the mock survey and importers."""
