"""OneAll Push: the uploader, and the media server OneAll fetches files from."""
