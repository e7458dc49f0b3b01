"""The plugin host: hook specs, the plugin manager, the name -> class registries."""
