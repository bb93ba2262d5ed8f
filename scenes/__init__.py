"""scenes: the scene graph core, scene payloads, datasets and the methods built on them."""
