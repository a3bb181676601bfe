"""The tiny world: procedural faces and the small models the project trains on them."""
