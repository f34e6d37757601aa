"""What leaves besides the upload itself: the sidecar beside each file."""
