"""foliodiff's engine: executable models of Linux lazyfree reclaim, by kernel version."""
