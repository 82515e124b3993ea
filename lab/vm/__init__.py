"""Real guests for the demo, the tests and the benchmarks: image, libvirt, accelerator, clients."""
