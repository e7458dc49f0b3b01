"""The recorder: one process per camera, turning a camera backend's files into ready segments."""
