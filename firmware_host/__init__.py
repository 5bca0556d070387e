"""Everything that talks to hardware: digitizers, serial pads, cameras, and their recordings."""
