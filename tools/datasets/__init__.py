"""Dataset readers: one function per public benchmark layout, from a folder to labelled samples."""
